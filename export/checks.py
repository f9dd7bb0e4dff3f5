"""Checks of a verified file beyond the Keras comparison: IoU against the held-out masks,
and the mask output (`--output mask`) checked against the probability file.

Example:
```python
iou_against_truth(job, CONVERTER, stamped.model_bytes)  # {'iou_keras': 0.79, ...}
stamped = with_mask_head(job, CONVERTER, stamped)
```
"""

from __future__ import annotations

import warnings
from typing import Any

from keras_unet.export.stamp import StampedFile


def iou_against_truth(job: Any, converter: Any, model_bytes: bytes) -> dict:
    """IoU of Keras and of the file against the held-out masks, and the drop; {} without masks.

    Example:
    ```python
    iou_against_truth(job, CONVERTER, model_bytes)  # {'iou_keras': 0.79, 'iou_export': 0.789, ...}
    ```
    """
    if not job.verification_masks:
        return {}
    import numpy as np

    from keras_unet.runtime import imageio, load_runner
    from keras_unet.runtime.scores import probabilities_to_masks, segmentation_scores

    num_classes = job.facts["num_classes"]
    try:
        truth = [imageio.resize_mask(imageio.decode_mask(imageio.read_mask(path), "auto",
                                                         num_classes, job.facts.get("ignore_index"),
                                                         path=path), job.size)
                 for path in job.verification_masks]
    except (ValueError, OSError) as error:  # masks the model cannot be scored on: say so
        warnings.warn(f"IoU against the held-out masks was skipped: {error}", UserWarning,
                      stacklevel=3)
        return {}
    images, _ = job.verification_images()
    path = job.new_path("truth", converter.suffix)
    path.write_bytes(model_bytes)
    with load_runner(str(path)) as runner:
        exported = np.asarray(runner.predict(images), dtype="float32")
    ignore = job.facts.get("ignore_index")
    keras_iou = segmentation_scores(truth, probabilities_to_masks(job.reference(), job.threshold),
                                    num_classes, ignore)["iou"]
    export_iou = segmentation_scores(truth, probabilities_to_masks(exported, job.threshold),
                                     num_classes, ignore)["iou"]
    return {"iou_keras": float(keras_iou), "iou_export": float(export_iou),
            "iou_drop": float(keras_iou - export_iou)}


def with_mask_head(job: Any, converter: Any, stamped: StampedFile) -> StampedFile:
    """The verified probability file ending with its mask step, with its metadata.

    The mask file must give the masks the probability file gives on the verification images
    at the file's input size (where the two runners do the same resizing), pixel for pixel up
    to `MASK_HEAD_AGREEMENT`; else `VerificationError` is raised and nothing is written.
    """
    import numpy as np

    from keras_unet.export.verify import VerificationError
    from keras_unet.runtime import load_runner
    from keras_unet.runtime.resizing import resize_image

    model_bytes, metadata = stamped.model_bytes, stamped.metadata
    threshold = metadata.get("threshold") or 0.5
    head = converter.mask_head(model_bytes, int(metadata["num_classes"]), threshold)
    mask_metadata = {**metadata, "output": "mask", "output_dtype": "uint8",
                     "output_quantization": None}
    head = converter.embed_metadata(head, mask_metadata)
    images, _ = job.verification_images()
    height, width = job.export_size
    if height is not None:
        images = [resize_image(np.asarray(image, np.float32), (height, width)) for image in images]
    paths = []
    for name, data in (("probabilities", model_bytes), ("mask", head)):
        path = job.new_path(name, converter.suffix)
        path.write_bytes(data)
        paths.append(path)
    try:
        with load_runner(paths[0], threads=1) as reference, load_runner(paths[1], threads=1) as masks:
            expected, got = reference.predict_masks(images), masks.predict_masks(images)
    finally:
        for path in paths:
            path.unlink()
    same = float(np.mean([np.mean(np.asarray(a) == np.asarray(b)) for a, b in zip(expected, got)]))
    if same < MASK_HEAD_AGREEMENT:
        raise VerificationError(f"The mask output gives other masks than the verified probability "
                                f"file (pixel agreement {same:.6f} < {MASK_HEAD_AGREEMENT}); "
                                "nothing was written.")
    return StampedFile(head, converter.describe(head),
                       {**mask_metadata, "mask_head_pixel_agreement": round(same, 6)})


# onnxruntime optimizes a graph with the mask step appended a little differently (which
# quantize/dequantize pairs it fuses), so a probability within a rounding step of the
# threshold can fall on the other side: a few pixels in 10^4 on random images; TFLite files
# and float ONNX files agree exactly.
MASK_HEAD_AGREEMENT = 0.999
