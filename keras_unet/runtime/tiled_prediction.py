"""Tiled prediction: the steps of `Runner.predict(images, tile=...)` (see `keras_unet.runtime.base`).

The tile geometry and the blend weights are `keras_unet.runtime.tiling`'s; this module strings
them together with a runner's own steps (`prepare`'s channel rule, `run`, `postprocess`).
"""

from typing import Any

import numpy as np

from keras_unet.runtime.tensors import as_image_list, fit_channels, quantize
from keras_unet.runtime.tiling import TileBlender, pad_to_tile, tile_boxes, tile_window


def predict_tiled(runner, images, overlap, tile_size) -> Any:
    """`runner.predict(images, tile=...)`: probabilities of each image at its native size, from
    overlapping tiles of the runner's input size blended with `tiling.tile_window`.

    Tiles of all the images go through `runner.run` in batches of `runner.predict_batch_size`;
    an image's blended result replaces its running sums as soon as its last tile is in.
    Returns an array `(N, H, W, K)` when the images share one size, else a list.
    """
    size = runner.resolve_tile_size(tile_size)
    images = as_image_list(images)
    runner._check_range(images)
    window = tile_window(size, overlap)
    sizes = [image.shape[:2] for image in images]
    result: list[Any] = [None] * len(images)
    pending: list[tuple] = []  # (image index, blender, box, tile): tiles of any images, batched for run
    remaining: dict[int, int] = {}  # image index -> its tiles not yet blended
    fix = "pass a tile_size that is such a multiple"

    def flush():
        batch = quantize(np.stack([tile for *_, tile in pending]), runner.input_dtype,
                         runner.input_quantization)
        raw = runner._run_checked(batch, fix)
        for (index, blender, box, _), p in zip(pending, runner.postprocess(raw, [size] * len(pending))):
            blender.add(p, box)
            remaining[index] -= 1
            if not remaining[index]:  # done: the blended image replaces its sums
                result[index] = blender.result(crop=sizes[index])
        pending.clear()

    for index, image in enumerate(images):
        image = fit_channels(image, runner.channels, runner.path).astype(np.float32, copy=False)
        image = pad_to_tile(image, size)
        blender = TileBlender(image.shape[:2], window)
        boxes = tile_boxes(image.shape[:2], size, overlap)
        remaining[index] = len(boxes)
        for box in boxes:
            top, left, bottom, right = box
            pending.append((index, blender, box, image[top:bottom, left:right]))
            if len(pending) >= runner.predict_batch_size:
                flush()
    if pending:
        flush()
    if len(set(sizes)) == 1:
        return np.stack(result)
    return result
