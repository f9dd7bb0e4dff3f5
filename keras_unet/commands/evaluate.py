"""Evaluate a model file on labelled images: IoU and Dice per class and mean.

MODEL may be .keras, .tflite, .onnx or OpenVINO .xml (--runtime openvino also runs a
.tflite or .onnx file with OpenVINO); input size, channels, number of classes and the
threshold come from the model (the metadata of an exported file), and each image is
scored at its own size. The numbers are computed by `keras_unet.runtime.scores`, the same
code the benchmark uses. With --tile the images are segmented at native resolution in
overlapping tiles of the model's input size (as `keras-unet predict --tile`) instead of
resized to the model input.

Examples:
  keras-unet evaluate runs/nuclei/model.keras --data data/nuclei_val --json scores.json
  keras-unet evaluate unet.onnx --data data/large_val --tile 0.25
  keras-unet evaluate unet_int8.tflite --data data/nuclei_val --runtime openvino
"""

import os

HELP = "score a .keras/.tflite/.onnx model on DIR/images + DIR/masks (IoU, Dice)"


def add_arguments(parser):
    from keras_unet.commands.predict import add_runtime_argument, add_tile_arguments
    from keras_unet.console.arguments import (any_int, existing_dir, existing_file,
                                              output_file, positive_int)

    parser.add_argument("model", metavar="MODEL", type=existing_file,
                        help=".keras, .tflite, .onnx or OpenVINO .xml (with its .bin) file")
    parser.add_argument("--data", required=True, metavar="DIR", type=existing_dir,
                        help="folder with images/ and masks/")
    parser.add_argument("--ignore-index", type=any_int, default=None, metavar="K",
                        help="mask value to skip (default: the model's metadata, else none)")
    parser.add_argument("--mask-encoding", default="auto", choices=["auto", "binary", "index", "trimap"],
                        help="how mask values map to classes")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per call")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="runtime threads (default: the runtime's choice, all cores)")
    add_runtime_argument(parser)
    add_tile_arguments(parser)
    parser.add_argument("--json", metavar="FILE", type=output_file,
                        help="also write the scores as JSON (default: none)")


def evaluate(model_path, data_dir, ignore_index=None, mask_encoding="auto", batch_size=8, threads=None,
             tile=None, tile_size=None, runtime=None) -> dict:
    """Scores of `model_path` on `data_dir`; see `keras_unet.runtime.scores.segmentation_scores`.

    `tile` and `tile_size` are those of `keras_unet.runtime.base.Runner.predict` (None:
    resize to the model input); the scores record them as `tile_overlap` and `tile_size`.
    `runtime` is that of `keras_unet.runtime.load_runner` (None: by the file's suffix); the
    scores record the runner's `runtime` (its `format`: tflite, onnx, keras or openvino).
    """
    from keras_unet.runtime.scores import segmentation_scores
    from keras_unet.runtime import imageio, load_runner
    from keras_unet.runtime.tiling import tile_overlap

    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be at least 1. Received: batch_size={batch_size}")
    overlap = tile_overlap(tile)
    runner = load_runner(model_path, threads=threads, runtime=runtime)
    tiles = {}
    if overlap is not None:
        tile_size = runner.resolve_tile_size(tile_size)  # fails before any work
        tiles = {"tile": tile, "tile_size": tile_size}
    if ignore_index is None:
        ignore_index = runner.metadata.get("ignore_index")
    num_classes = runner.num_classes
    truths, predictions = [], []
    pairs = imageio.list_pairs(data_dir)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        read = [imageio.read_pair(image, mask, channels=runner.metadata.get("channels", 3),
                                  mask_encoding=mask_encoding, num_classes=num_classes,
                                  ignore_index=ignore_index) for image, mask in chunk]
        predictions.extend(runner.predict_masks([image for image, _ in read], **tiles))
        truths.extend(mask for _, mask in read)
    scores = segmentation_scores(truths, predictions, num_classes, ignore_index=ignore_index)
    scores.update({"model": os.fspath(model_path), "runtime": runner.format, "data": os.fspath(data_dir), "images": len(pairs),
                   "ignore_index": ignore_index, "class_names": runner.metadata.get("class_names"),
                   "class_labels": class_labels(num_classes, runner.metadata.get("class_names")),
                   "tile_overlap": overlap, "tile_size": list(tile_size) if overlap is not None else None})
    return scores


def class_labels(num_classes, class_names=None):
    """Labels of the score rows of a model with `num_classes` outputs.

    A binary model has one output (the foreground) but two score rows, background and
    foreground, so its one class name labels row 1; a multi-class model names row i with
    `class_names[i]`. Rows without a name show their index.

    Example:
    ```python
    class_labels(1, ["nucleus"])           # ["background", "nucleus"]
    class_labels(3, ["sky", "road"])       # ["sky", "road", "2"]
    ```
    """
    names = [str(name) for name in (class_names or [])]
    if num_classes == 1:
        return ["background", names[-1] if names else "foreground"]
    return [names[i] if i < len(names) else str(i) for i in range(num_classes)]


def format_table(scores):
    rows = list(zip(scores["iou_per_class"], scores["dice_per_class"]))
    labels = scores.get("class_labels") or [str(i) for i in range(len(rows))]
    lines = [f"{'class':<16}{'IoU':>8}{'Dice':>8}"]
    for name, (iou, dice) in zip(labels, rows):
        lines.append(f"{name:<16}{_num(iou):>8}{_num(dice):>8}")
    lines.append(f"{'mean':<16}{_num(scores['mean_iou']):>8}{_num(scores['mean_dice']):>8}")
    lines.append(f"headline IoU {_num(scores['iou'])}, Dice {_num(scores['dice'])} on {scores['images']} images")
    return "\n".join(lines)


def _num(value):
    # NaN: the class is absent from both truth and prediction, so it has no score.
    return "-" if value is None or value != value else f"{value:.4f}"


def run(args):
    from keras_unet.commands.predict import tile_options

    tile, tile_size = tile_options(args)
    scores = evaluate(args.model, args.data, args.ignore_index, args.mask_encoding, args.batch_size,
                      args.threads, tile, tile_size, args.runtime)
    print(format_table(scores))
    if args.json:
        from keras_unet.runtime.files import write_json_atomic

        write_json_atomic(args.json, scores)  # NaN (a class absent from both) is written as null
    return 0
