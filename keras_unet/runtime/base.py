"""What every runner does the same way: images in, probabilities or masks out.

A subclass loads its file, says what its tensors look like, and implements `run` (one
prepared batch through the runtime, nothing else: the benchmark times it). The steps
around it are written once and strung together here: metadata merging
(`keras_unet.runtime.metadata`), channel conversion, quantization and activation
(`keras_unet.runtime.tensors`), resizing (`keras_unet.runtime.resizing`) and the
threshold rule (`keras_unet.runtime.scores.probabilities_to_masks`: `p >= threshold`).

Choices every runner shares:

- Images are `(N, H, W, C)` / `(N, H, W)` arrays, one `(H, W[, C])` image, or a list of
  images of any sizes, with values in [0, 255] (uint8 or float).
- Channels: an image with the model's channel count is used as it is. Otherwise, for
  models taking 1, 3 or 4 channels, it is converted the way `imageio.read_image` converts
  files: grayscale -> RGB repeats the channel, RGB -> grayscale uses ITU-R 601-2 luma, an
  alpha channel is dropped. Any other mismatch raises `ValueError`.
- Images are resized (bilinear) to the model's input size, and probabilities back to each
  image's own size (bilinear on the float maps). A model that takes any size runs each
  image at its own size, images of one size batched together.
- Tiled (`predict(images, tile=True)` or an overlap fraction): each image is covered at its
  native resolution by overlapping tiles of the model's input size (`tile_size` or the
  metadata's size for a model that takes any size), an image smaller than a tile is
  reflect-padded instead of resized, the tiles of all images go through `run` in batches of
  `predict_batch_size`, and their probabilities are averaged with weights that ramp down
  (raised cosine) over each tile's overlap border (`keras_unet.runtime.tiling`), so a tile's
  edge, where the model saw padding, does not leave a seam. Masks threshold (or
  take the argmax of) the blended probabilities, once.
- Files without keras_unet metadata get what their tensors tell (size, channels, dtype,
  quantization, classes) plus defaults: inputs in [0, 255], sigmoid for one output
  channel, softmax for more. A warning says so, once per file.
"""

from typing import Any, Optional

import numpy as np

from keras_unet.runtime.metadata_schema import is_mask_output
from keras_unet.runtime.notices import warn_once, warned
from keras_unet.runtime.resizing import check_size, resize_image
from keras_unet.runtime.scores import probabilities_to_masks
from keras_unet.runtime.tensors import (
    activate,
    as_image_list,
    dequantize,
    fit_channels,
    looks_like_unit_range,
    quantize,
)
from keras_unet.runtime.tiled_prediction import predict_tiled
from keras_unet.runtime.tiling import tile_overlap

__all__ = ["Runner"]


class Runner:
    """Runs one model file. Subclasses set the attributes below and implement `run`.

    Attributes:
        path: the model file.
        format: `"tflite"`, `"onnx"` or `"keras"`.
        metadata: the keras_unet metadata (from the file, checked against its tensors, or
            derived from the tensors when the file has none).
        input_size: `(H, W)`, or `(None, None)` when the model takes any size.
        channels, num_classes, quantization, threshold: from the metadata.
        input_dtype: numpy dtype the model's input tensor takes.
        input_quantization: `{"scale", "zero_point"}` of an integer input, else None.
        output_quantization: likewise for the output.

    Example:
    ```python
    from keras_unet.runtime import load_runner

    with load_runner("unet.onnx") as runner:
        batch = runner.prepare(images)          # resize + cast/quantize, once
        raw = runner.run(batch)                 # the model alone
        probabilities = runner.postprocess(raw, [image.shape[:2] for image in images])
    ```
    """

    format: Optional[str] = None
    # Set by each format's runner before `Runner.__init__` reads them.
    input_size: tuple
    input_dtype: Any
    input_quantization: Optional[dict]
    output_quantization: Optional[dict]
    #: images per `run` call in `predict` (bounds memory; `run` itself takes any batch).
    predict_batch_size = 16

    def __init__(self, path, metadata) -> None:
        self.path = str(path)
        self.metadata = metadata

    # What subclasses provide -------------------------------------------------------
    def run(self, batch) -> Any:
        """Raw output of the model for a batch made by `prepare` (the call to time).

        Args:
            batch: `(N, H, W, C)` array from `prepare`, any `N`.

        Returns:
            The output tensor as the runtime gives it (quantized for integer outputs).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Releases the runtime's resources; the runner cannot run afterwards."""

    # Derived from the metadata -------------------------------------------------------
    @property
    def quantization(self) -> str:
        return self.metadata.get("quantization") or "none"

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def channels(self) -> int:
        return int(self.metadata["channels"])

    @property
    def threshold(self) -> Optional[float]:
        threshold = self.metadata.get("threshold")
        return 0.5 if threshold is None else float(threshold)

    @property
    def output_activation(self) -> Optional[str]:
        """The activation inside the model, or None when it outputs logits."""
        return self.metadata.get("output_activation")

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}, quantization={self.quantization!r}, "
                f"input_size={self.input_size}, num_classes={self.num_classes})")

    # Images -> model input -------------------------------------------------------------
    def _check_range(self, images):
        # [0, 1] floats are the most common mistake; the models expect [0, 255].
        key = ("range", self.path)
        if not warned(key) and looks_like_unit_range(images):
            warn_once(
                key,
                f"{self.path}: the images are floats in [0, 1], but the model expects values "
                "in [0, 255] (its normalisation is inside the model). Multiply by 255.",
            )

    def _model_size(self, image):
        height, width = self.input_size
        if height is None or width is None:
            # A model that takes any size runs each image at its own size.
            return (image.shape[0] if height is None else height,
                    image.shape[1] if width is None else width)
        return (height, width)

    def prepare(self, images) -> np.ndarray:
        """A model-ready batch: channels converted, resized, cast/quantized.

        Args:
            images: array `(N, H, W, C)` / `(N, H, W)`, one image `(H, W[, C])`, or a list
                of images of any sizes, values in [0, 255].

        Returns:
            `(N, H, W, C)` array of the model's input dtype.

        Example:
        ```python
        batch = runner.prepare(np.zeros((4, 300, 200, 3), np.uint8))
        ```
        """
        images = as_image_list(images)
        self._check_range(images)
        prepared = []
        for image in images:
            image = fit_channels(image, self.channels, self.path)
            image = resize_image(image.astype(np.float32, copy=False), self._model_size(image))
            prepared.append(image)
        sizes = {p.shape[:2] for p in prepared}
        if len(sizes) > 1:
            raise ValueError(
                f"{self.path}: a model that takes any size needs images of one size per batch. "
                f"Received sizes {sorted(sizes)}. Use predict(), which groups them, or resize them first."
            )
        return quantize(np.stack(prepared), self.input_dtype, self.input_quantization)

    # Model output -> probabilities ------------------------------------------------------
    def postprocess(self, raw, sizes) -> list:
        """Probabilities per image, resized back to `sizes`.

        Dequantizes an integer output and applies sigmoid (K = 1) or softmax (K > 1) when
        the metadata says the model outputs logits (`output_activation` null).

        Args:
            raw: output of `run`, `(N, h, w, K)` (or `(N, h, w)`).
            sizes: one `(H, W)` per image.

        Returns:
            list of float32 `(H, W, K)` arrays.

        Example:
        ```python
        probabilities = runner.postprocess(runner.run(batch), [(480, 640)] * len(batch))
        ```
        """
        if is_mask_output(self.metadata):
            probabilities = _one_hot(raw, self.num_classes)  # a file exported with its mask step
        else:
            probabilities = dequantize(raw, self.output_quantization)
        if probabilities.ndim == 3:
            probabilities = probabilities[..., None]
        if len(sizes) != len(probabilities):
            raise ValueError(
                f"`sizes` needs one (H, W) per image of the batch ({len(probabilities)}). "
                f"Received: {len(sizes)} sizes"
            )
        if self.output_activation is None and self.metadata.get("output") != "mask":
            probabilities = activate(probabilities)
        return [resize_image(p, tuple(int(s) for s in size)).astype(np.float32, copy=False)
                for p, size in zip(probabilities, sizes)]

    def predict(self, images, tile=None, tile_size=None) -> Any:
        """Probabilities at each image's own size.

        By default each image is resized to the model's input and the probabilities back to
        the image's size. With `tile`, an image is segmented at its native resolution in
        overlapping tiles of the model's input size, blended without seams
        (`keras_unet.runtime.tiling`): for images much larger than the model input (a
        4000x3000 photo and a 128x128 model), where resizing would lose the detail.

        Args:
            images: array `(N, H, W, C)` / `(N, H, W)`, one image, or a list of images of
                any sizes, values in [0, 255].
            tile: None or False (default): resize to the model input. True: tiles sharing
                a quarter of their size with each neighbour (`tiling.DEFAULT_OVERLAP`).
                A number in [0, 1): the overlap fraction (0: tiles only touch). An image
                smaller than a tile in a dimension is reflect-padded, not resized.
            tile_size: `(H, W)` of the tiles, for a model that takes any size (default: the
                metadata's `input_size`; a multiple of the model's total stride, e.g. 32).
                A fixed-size model's tiles are its input size.

        Returns:
            float32 array `(N, H, W, K)` when all images share one size, else a list of
            `(H, W, K)` arrays. `K` is `num_classes` (1 for binary).

        Raises:
            ValueError: a bad `tile`/`tile_size`, or `tile` on a model that takes any size
                when neither `tile_size` nor its metadata gives a size.

        Example:
        ```python
        probabilities = runner.predict([np.zeros((300, 200, 3), np.uint8)])  # (1, 300, 200, K)
        photo = np.zeros((3000, 4000, 3), np.uint8)
        tiled = runner.predict(photo, tile=True)        # (1, 3000, 4000, K), native detail
        tiled = runner.predict(photo, tile=0.5)         # tiles overlapping by half
        ```
        """
        overlap = tile_overlap(tile)
        if overlap is not None:
            return predict_tiled(self, images, overlap, tile_size)
        if tile_size is not None:
            raise ValueError(
                f"`tile_size` is used only when tiling: pass tile=True as well. Received: "
                f"tile={tile!r}, tile_size={tile_size!r}"
            )
        images = as_image_list(images)
        sizes = [image.shape[:2] for image in images]
        if None in tuple(self.input_size):
            # Any-size model: batch the images that share a size, in their original order.
            groups: Any = {}
            for index, image in enumerate(images):
                groups.setdefault(image.shape[:2], []).append(index)
            groups = list(groups.values())
        else:
            groups = [list(range(len(images)))]
        result: list = [None] * len(images)
        step = self.predict_batch_size
        for group in groups:
            for start in range(0, len(group), step):
                chunk = group[start : start + step]
                batch = self.prepare([images[i] for i in chunk])
                raw = self._run_checked(batch)
                for i, p in zip(chunk, self.postprocess(raw, [sizes[i] for i in chunk])):
                    result[i] = p
        if len(set(sizes)) == 1:
            return np.stack(result)
        return result

    def _run_checked(self, batch, fix="resize or pad the images to such a size"):
        try:
            return self.run(batch)
        except (ValueError, RuntimeError) as error:
            if None not in tuple(self.input_size):
                raise
            raise ValueError(
                f"{self.path} could not run at input size {tuple(batch.shape[1:3])}: {error}. "
                "A model that takes any size usually needs multiples of its total stride "
                f"(2**depth for a UNet, e.g. 32): {fix}."
            ) from error

    # Tiles ---------------------------------------------------------------------------------
    def resolve_tile_size(self, tile_size=None) -> Any:
        """`(H, W)` of the tiles `predict(..., tile=...)` runs: the model's input size.

        Args:
            tile_size: `(H, W)` for a model that takes any size; for a fixed-size model it
                may only repeat the input size.

        Raises:
            ValueError: `tile_size` disagrees with a fixed input size, or a model that takes
                any size has neither `tile_size` nor an `input_size` in its metadata.

        Example:
        ```python
        runner.resolve_tile_size()             # (128, 128) for a 128x128 model
        runner.resolve_tile_size((256, 256))   # a model that takes any size
        ```
        """
        fixed = tuple(self.input_size)
        if tile_size is not None:
            size = check_size(tile_size, "tile_size")
            if any(f is not None and f != s for f, s in zip(fixed, size)):
                raise ValueError(
                    f"{self.path} takes inputs of size {fixed}, so its tiles are that size. "
                    f"Received: tile_size={tuple(tile_size)}; leave it out."
                )
            return size
        stored = self.metadata.get("input_size") or (None, None)
        size = tuple(f if f is not None else s for f, s in zip(fixed, stored))
        if None in size:
            raise ValueError(
                f"{self.path} takes any input size, so tiling needs a tile size and its metadata "
                "has none: pass tile_size=(H, W) (keras-unet predict/evaluate: --tile-size H W), "
                "e.g. the size it was trained at, a multiple of its total stride (2**depth for "
                "a UNet, e.g. 32)."
            )
        return tuple(int(s) for s in size)

    def predict_masks(self, images, threshold=None, tile=None, tile_size=None) -> Any:
        """Integer masks at each image's own size.

        Args:
            images: as for `predict`.
            threshold: for a binary model, `p >= threshold` is 1 (default: the metadata's,
                else 0.5). Multi-class models take the argmax.
            tile: None/False (default: resize to the model input), True or an overlap
                fraction in [0, 1): segment at native resolution in overlapping tiles (see
                `predict`); the threshold/argmax applies once, to the blended probabilities.
            tile_size: `(H, W)` of the tiles for a model that takes any size (see `predict`).

        Returns:
            uint8 array `(N, H, W)` (a list of `(H, W)` for images of different sizes);
            int32 beyond 256 classes.

        Example:
        ```python
        masks = runner.predict_masks(images)  # binary: 0/1
        masks = runner.predict_masks(photos, tile=True, threshold=0.4)  # large images
        ```
        """
        probabilities = self.predict(images, tile=tile, tile_size=tile_size)
        threshold = self.threshold if threshold is None else float(threshold)
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        if isinstance(probabilities, np.ndarray):
            return probabilities_to_masks(probabilities, threshold).astype(dtype, copy=False)
        return [probabilities_to_masks(p, threshold).astype(dtype, copy=False) for p in probabilities]


def _one_hot(masks, num_classes):
    """Class-id masks `(N, H, W)` as 0/1 "probabilities" `(N, H, W, K)` (`K = 1` for binary).

    A file exported with `output="mask"` has no probabilities; its masks as one-hot values
    go through the same resizing, tiling and thresholding as probabilities, so
    `predict_masks` gives its masks unchanged at the model's size.
    """
    masks = np.asarray(masks)
    if num_classes == 1:
        return masks.astype(np.float32)[..., None]
    return np.eye(num_classes, dtype=np.float32)[masks.astype(np.int64)]
