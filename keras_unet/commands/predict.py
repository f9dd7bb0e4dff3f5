"""Segment a folder of images with a .keras, .tflite, .onnx or OpenVINO .xml model.

Writes OUT/<stem>.png per image at the image's own size: 0/255 for a binary model, the
class index per pixel for a multi-class model (a palette PNG, so viewers show colours
while the pixel values stay class indices). --overlay also writes OUT/overlays/<stem>.png,
the mask blended over the image. Existing files in OUT are never replaced unless
--overwrite is given.

Images are resized to the model input and the masks back, unless --tile: then each image
is segmented at its native resolution in overlapping tiles of the model's input size,
blended without seams (for photos much larger than the model input).

Examples:
  keras-unet predict runs/nuclei/model.keras --images photos/ --out masks/ --overlay
  keras-unet predict unet.tflite --images large_photos/ --out masks/ --tile
  keras-unet predict unet_any_size.onnx --images scans/ --out masks/ --tile 0.5 --tile-size 256
  keras-unet predict unet_int8.onnx --images photos/ --out masks/ --runtime openvino
"""

import os

import numpy as np

HELP = "write one mask PNG per image (and optional overlays)"

# Distinct colours for up to 20 classes (class 0 black: background stays dark).
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128]], dtype=np.uint8)  # fmt: skip


def add_arguments(parser):
    from keras_unet.console.arguments import existing_dir, existing_file, output_dir, positive_int, unit_interval

    parser.add_argument("model", metavar="MODEL", type=existing_file,
                        help=".keras, .tflite, .onnx or OpenVINO .xml (with its .bin) file")
    parser.add_argument("--images", required=True, metavar="DIR", type=existing_dir, help="folder of images")
    parser.add_argument("--out", required=True, metavar="OUTDIR", type=output_dir,
                        help="folder for the masks (created)")
    parser.add_argument("--overlay", action="store_true", help="also write mask-over-image pictures")
    parser.add_argument("--threshold", type=unit_interval, default=None, metavar="P",
                        help="binary models: foreground where p >= P, in [0, 1] (default: the "
                             "model's metadata, else 0.5)")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per call")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="runtime threads (default: the runtime's choice, all cores)")
    add_runtime_argument(parser)
    add_tile_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in OUTDIR")


def add_runtime_argument(parser) -> None:
    """`--runtime NAME`, shared by predict and evaluate: which runtime runs MODEL."""
    from keras_unet.runtime import RUNTIMES

    parser.add_argument("--runtime", choices=list(RUNTIMES), default=None,
                        help="run MODEL with this runtime, e.g. openvino for a .onnx or .tflite "
                             "file (default: by suffix: .tflite TFLite, .onnx/.ort onnxruntime, "
                             ".keras Keras, .xml OpenVINO)")


def add_tile_arguments(parser):
    """`--tile [OVERLAP]` and `--tile-size H [W]`, shared by predict and evaluate."""
    from keras_unet.console.arguments import ImageSizeAction, half_open_fraction, positive_int
    from keras_unet.runtime.tiling import DEFAULT_OVERLAP

    parser.add_argument("--tile", type=half_open_fraction, nargs="?", const=DEFAULT_OVERLAP,
                        default=None, metavar="OVERLAP",
                        help="segment each image at its native resolution in overlapping tiles of "
                             "the model's input size, blended without seams, instead of resizing "
                             "it to the model input (images smaller than a tile are padded); "
                             "OVERLAP is the fraction of a tile neighbours share, in [0, 1) "
                             f"(default: off; {DEFAULT_OVERLAP:g} when --tile has no value)")
    parser.add_argument("--tile-size", type=positive_int, nargs="+", action=ImageSizeAction,
                        default=None, metavar=("H", "W"),
                        help="with --tile, for a model that takes any input size: the tiles' "
                             "H or H W, a multiple of its total stride (default: the model's "
                             "metadata; fixed-size models tile at their input size)")


def tile_options(args):
    """`(tile, tile_size)` for `Runner.predict` from `--tile`/`--tile-size`."""
    if args.tile_size is not None and args.tile is None:
        raise ValueError(f"--tile-size needs --tile. Received: --tile-size "
                         f"{' '.join(map(str, args.tile_size))} without --tile")
    tile_size = None if args.tile_size is None else (args.tile_size[0], args.tile_size[-1])
    return args.tile, tile_size


def interrupted(args):
    return (f"masks written so far are complete files in {args.out}; rerun with --overwrite "
            f"to redo them all")


def colorize(mask):
    """RGB picture of a class-index mask."""
    return PALETTE[np.asarray(mask) % len(PALETTE)]


def overlay(image, mask, alpha=0.5):
    """The mask's colours blended over the image where the mask is not background."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colours = colorize(mask).astype(np.float32)
    blended = rgb.astype(np.float32)
    foreground = np.asarray(mask) > 0
    blended[foreground] = (1 - alpha) * blended[foreground] + alpha * colours[foreground]
    return blended.round().astype(np.uint8)


def _save_png(array, path, palette=False):
    from PIL import Image

    picture = Image.fromarray(array)
    if palette:
        picture = picture.convert("P") if picture.mode != "L" else picture
        picture.putpalette(PALETTE.flatten().tolist())
    from keras_unet.runtime.files import atomic_output

    with atomic_output(path) as tmp:
        picture.save(tmp, format="PNG")


def predict_folder(model_path, images_dir, out_dir, with_overlay=False, threshold=None,
                   batch_size=8, threads=None, overwrite=False, tile=None, tile_size=None,
                   runtime=None) -> list:
    """Writes the masks; returns the list of mask paths.

    `tile` and `tile_size` are those of `keras_unet.runtime.base.Runner.predict`: None
    resizes each image to the model input, True or an overlap fraction segments it at its
    native resolution in overlapping tiles. `runtime` is that of
    `keras_unet.runtime.load_runner` (None: by the file's suffix).
    """
    from keras_unet.runtime import imageio, load_runner
    from keras_unet.runtime.tiling import tile_overlap

    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be at least 1. Received: batch_size={batch_size}")
    tiled = tile_overlap(tile) is not None

    runner = load_runner(model_path, threads=threads, runtime=runtime)
    if tiled:
        runner.resolve_tile_size(tile_size)  # a model without a tile size fails before any work
    paths = imageio.list_images(images_dir)
    targets = [os.path.join(out_dir, f"{os.path.splitext(os.path.basename(p))[0]}.png") for p in paths]
    if not overwrite:
        existing = [t for t in targets if os.path.exists(t)]
        if existing:
            raise FileExistsError(
                f"{len(existing)} mask file(s) already exist in {out_dir!r} (e.g. {existing[0]!r}); "
                "pass --overwrite to replace them or choose another --out."
            )
    os.makedirs(out_dir, exist_ok=True)
    if with_overlay:
        os.makedirs(os.path.join(out_dir, "overlays"), exist_ok=True)
    channels = runner.metadata.get("channels", 3)
    binary = runner.num_classes == 1
    kwargs = {} if threshold is None else {"threshold": threshold}
    if tiled:
        kwargs.update(tile=tile, tile_size=tile_size)
    from tqdm import tqdm

    for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch"):
        chunk = paths[start : start + batch_size]
        images = [imageio.read_image(p, channels=channels) for p in chunk]
        masks = runner.predict_masks(images, **kwargs)
        for image, mask, target in zip(images, masks, targets[start : start + batch_size]):
            mask = np.asarray(mask).astype(np.uint8)
            _save_png(mask * 255 if binary else mask, target, palette=not binary)
            if with_overlay:
                _save_png(overlay(image, mask), os.path.join(out_dir, "overlays", os.path.basename(target)))
    return targets


def run(args):
    tile, tile_size = tile_options(args)
    written = predict_folder(args.model, args.images, args.out, args.overlay, args.threshold,
                             args.batch_size, args.threads, args.overwrite, tile, tile_size,
                             args.runtime)
    print(f"wrote {len(written)} masks to {args.out}")
    return 0
