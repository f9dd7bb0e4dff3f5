"""Evaluate a model file on labelled images: IoU and Dice per class and mean.

MODEL may be .keras, .tflite or .onnx; input size, channels, number of classes and the
threshold come from the model (the metadata of an exported file), and each image is
scored at its own size. The numbers are computed by `keras_unet.runtime.scores`, the same
code the benchmark uses.

Example:
  keras-unet evaluate runs/nuclei/model.keras --data data/nuclei_val --json scores.json
"""

import os

HELP = "IoU/Dice of a .keras/.tflite/.onnx model on DIR/images + DIR/masks"


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help=".keras, .tflite or .onnx file")
    parser.add_argument("--data", required=True, metavar="DIR", help="folder with images/ and masks/")
    parser.add_argument("--ignore-index", type=int, default=None, metavar="K",
                        help="mask value to skip (default: the model's metadata, else none)")
    parser.add_argument("--mask-encoding", default="auto", choices=["auto", "binary", "index", "trimap"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="runtime threads")
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")


def evaluate(model_path, data_dir, ignore_index=None, mask_encoding="auto", batch_size=8, threads=None):
    """Scores of `model_path` on `data_dir`; see `keras_unet.runtime.scores.segmentation_scores`."""
    from keras_unet.runtime.scores import segmentation_scores
    from keras_unet.runtime import imageio, load_runner

    runner = load_runner(model_path, threads=threads)
    if ignore_index is None:
        ignore_index = runner.metadata.get("ignore_index")
    num_classes = runner.num_classes
    truths, predictions = [], []
    pairs = imageio.list_pairs(data_dir)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = [imageio.read_image(image, channels=runner.metadata.get("channels", 3)) for image, _ in chunk]
        predictions.extend(runner.predict_masks(images))
        truths.extend(
            imageio.decode_mask(imageio.read_mask(mask), mask_encoding, num_classes=num_classes,
                                ignore_index=ignore_index, path=mask)
            for _, mask in chunk
        )
    scores = segmentation_scores(truths, predictions, num_classes, ignore_index=ignore_index)
    scores.update({"model": os.fspath(model_path), "data": os.fspath(data_dir), "images": len(pairs),
                   "ignore_index": ignore_index, "class_names": runner.metadata.get("class_names")})
    return scores


def format_table(scores):
    names = scores.get("class_names") or []
    lines = [f"{'class':<16}{'IoU':>8}{'Dice':>8}"]
    for index, (iou, dice) in enumerate(zip(scores["iou_per_class"], scores["dice_per_class"])):
        name = names[index] if index < len(names) else str(index)
        lines.append(f"{name:<16}{_num(iou):>8}{_num(dice):>8}")
    lines.append(f"{'mean':<16}{_num(scores['mean_iou']):>8}{_num(scores['mean_dice']):>8}")
    lines.append(f"headline IoU {_num(scores['iou'])}, Dice {_num(scores['dice'])} on {scores['images']} images")
    return "\n".join(lines)


def _num(value):
    # NaN: the class is absent from both truth and prediction, so it has no score.
    return "-" if value is None or value != value else f"{value:.4f}"


def _json_safe(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def run(args):
    scores = evaluate(args.model, args.data, args.ignore_index, args.mask_encoding, args.batch_size, args.threads)
    print(format_table(scores))
    if args.json:
        from keras_unet.runtime.files import write_json_atomic

        write_json_atomic(args.json, {k: _json_safe(v) for k, v in scores.items()})
    return 0
