"""What every runner does the same way: images in, probabilities or masks out.

A subclass loads its file, says what its tensors look like, and implements `run` (one
prepared batch through the runtime, nothing else: the benchmark times it). Metadata
merging, channel conversion, resizing, quantization, activation and thresholds live
here once.

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
- Files without keras_unet metadata get what their tensors tell (size, channels, dtype,
  quantization, classes) plus defaults: inputs in [0, 255], sigmoid for one output
  channel, softmax for more. A warning says so, once per file.
"""

import warnings

import numpy as np

from keras_unet.runtime import imageio

_WARNED = set()


def warn_once(key, message):
    """`warnings.warn(message)` the first time `key` is seen in this process."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, UserWarning, stacklevel=3)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tensor_metadata(fmt, input_size, channels, num_classes, input_dtype, output_dtype,
                    input_quantization=None, output_quantization=None, quantization=None):
    """The metadata a file's tensors tell, with defaults for what they cannot.

    Args:
        fmt: `"tflite"` / `"onnx"` / `"keras"`.
        input_size: `(H, W)`, None for a free dimension.
        channels, num_classes: from the input's and output's last dimension.
        input_dtype, output_dtype: numpy dtypes of the tensors.
        input_quantization, output_quantization: `{"scale", "zero_point"}` or None.
        quantization: the quantization mode if known, else guessed from the input dtype.

    Example:
    ```python
    tensor_metadata("onnx", (128, 128), 3, 1, np.float32, np.float32)
    ```
    """
    num_classes = int(num_classes)
    if quantization is None:
        quantization = "int8" if np.issubdtype(np.dtype(input_dtype), np.integer) else "none"
    return {
        "schema_version": None,
        "format": fmt,
        "quantization": quantization,
        "input_size": [None if s is None else int(s) for s in input_size],
        "channels": int(channels),
        "input_dtype": str(np.dtype(input_dtype)),
        "input_range": [0, 255],
        "input_quantization": input_quantization,
        "output_dtype": str(np.dtype(output_dtype)),
        "output_quantization": output_quantization,
        "num_classes": num_classes,
        "class_names": None,
        "output_activation": "sigmoid" if num_classes == 1 else "softmax",
        "threshold": 0.5 if num_classes == 1 else None,
        "ignore_index": None,
        "mask_encoding": "binary" if num_classes == 1 else "index",
    }


def merge_metadata(stored, derived, path):
    """The file's stored metadata, checked against (and completed from) its tensors.

    The tensors are what the runtime will actually do, so where the two disagree on a
    shape, dtype or quantization parameter, the tensors win and a warning names the field.

    Args:
        stored: metadata read from the file, or None.
        derived: `tensor_metadata(...)` of the same file.
        path: the file, for messages.

    Example:
    ```python
    metadata = merge_metadata(read_metadata("m.tflite"), tensor_metadata(...), "m.tflite")
    ```
    """
    if stored is None:
        warn_once(
            ("no-metadata", str(path)),
            f"{path}: no keras_unet metadata in this file; assuming images in [0, 255] and "
            f"{derived['output_activation']} probabilities at the output "
            f"({derived['num_classes']} class(es), read from the output tensor).",
        )
        return dict(derived)
    merged = {**derived, **stored}
    for key in ("channels", "num_classes", "input_dtype", "input_quantization",
                "output_quantization", "input_size"):
        told, actual = stored.get(key), derived.get(key)
        if key == "input_size" and told is not None:
            # A free dimension in the file is free whatever the metadata says.
            if all(a is None or t == a for t, a in zip(told, actual)):
                continue
        if key in stored and not _same(told, actual):
            warn_once(
                ("mismatch", str(path), key),
                f"{path}: the keras_unet metadata says {key}={told!r} but the model's tensors "
                f"say {actual!r}; using {actual!r}.",
            )
            merged[key] = actual
    return merged


def _same(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return (int(a["zero_point"]) == int(b["zero_point"])
                and np.isclose(float(a["scale"]), float(b["scale"]), rtol=1e-6))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


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

    format = None
    #: images per `run` call in `predict` (bounds memory; `run` itself takes any batch).
    predict_batch_size = 16

    def __init__(self, path, metadata):
        self.path = str(path)
        self.metadata = metadata

    # What subclasses provide -------------------------------------------------------
    def run(self, batch):
        """Raw output of the model for a batch made by `prepare` (the call to time).

        Args:
            batch: `(N, H, W, C)` array from `prepare`, any `N`.

        Returns:
            The output tensor as the runtime gives it (quantized for integer outputs).
        """
        raise NotImplementedError

    def close(self):
        """Releases the runtime's resources; the runner cannot run afterwards."""

    # Derived from the metadata -------------------------------------------------------
    @property
    def quantization(self):
        return self.metadata.get("quantization") or "none"

    @property
    def num_classes(self):
        return int(self.metadata["num_classes"])

    @property
    def channels(self):
        return int(self.metadata["channels"])

    @property
    def threshold(self):
        threshold = self.metadata.get("threshold")
        return 0.5 if threshold is None else float(threshold)

    @property
    def output_activation(self):
        """The activation inside the model, or None when it outputs logits."""
        return self.metadata.get("output_activation")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}, quantization={self.quantization!r}, "
                f"input_size={self.input_size}, num_classes={self.num_classes})")

    # Images -> model input -------------------------------------------------------------
    @staticmethod
    def _as_list(images):
        """A list of `(H, W[, C])` arrays from a batch array, one image, or a list."""
        if isinstance(images, np.ndarray):
            if images.ndim == 4:
                return list(images)
            if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 2, 3, 4)):
                return [images]  # one image
            if images.ndim == 3:
                return list(images)  # (N, H, W) grayscale
            raise ValueError(
                f"Expected images of shape (N, H, W, C), (N, H, W), (H, W, C) or (H, W). "
                f"Received: images.shape={images.shape}"
            )
        images = [np.asarray(image) for image in images]
        if not images:
            raise ValueError("`images` is empty: expected at least one image.")
        return images

    def _convert_channels(self, image):
        have = image.shape[-1] if image.ndim == 3 else 1
        if image.ndim not in (2, 3):
            raise ValueError(
                f"Expected each image as (H, W) or (H, W, C). Received: shape={image.shape}"
            )
        if have == self.channels:
            return image if image.ndim == 3 else image[..., None]
        if self.channels in (1, 3, 4) and have in (1, 2, 3, 4):
            return imageio.convert_channels(image, self.channels)
        raise ValueError(
            f"{self.path} takes images with {self.channels} channel(s). "
            f"Received: an image of shape {image.shape}"
        )

    def _check_range(self, images):
        # [0, 1] floats are the most common mistake; the models expect [0, 255].
        if ("range", self.path) in _WARNED:
            return
        floats = [image for image in images if np.issubdtype(image.dtype, np.floating)]
        top = max((float(np.max(image)) for image in floats), default=0.0)
        if 0.0 < top <= 1.0:  # all-black images are fine
            warn_once(
                ("range", self.path),
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

    def prepare(self, images):
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
        images = self._as_list(images)
        if not images:
            raise ValueError("`images` is empty: expected at least one image.")
        self._check_range(images)
        prepared = []
        for image in images:
            image = self._convert_channels(image)
            image = imageio.resize_image(image.astype(np.float32, copy=False), self._model_size(image))
            prepared.append(image)
        sizes = {p.shape[:2] for p in prepared}
        if len(sizes) > 1:
            raise ValueError(
                f"{self.path}: a model that takes any size needs images of one size per batch. "
                f"Received sizes {sorted(sizes)}. Use predict(), which groups them, or resize them first."
            )
        return self._quantize_input(np.stack(prepared))

    def _quantize_input(self, batch):
        quant = self.input_quantization
        dtype = np.dtype(self.input_dtype)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            if quant:
                batch = batch / float(quant["scale"]) + float(quant["zero_point"])
            return np.clip(np.round(batch), info.min, info.max).astype(dtype)
        return batch.astype(dtype, copy=False)

    # Model output -> probabilities ------------------------------------------------------
    def _dequantize_output(self, raw):
        raw = np.asarray(raw)
        quant = self.output_quantization
        if quant and np.issubdtype(raw.dtype, np.integer):
            return (raw.astype(np.float32) - float(quant["zero_point"])) * float(quant["scale"])
        return raw.astype(np.float32)

    def postprocess(self, raw, sizes):
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
        probabilities = self._dequantize_output(raw)
        if probabilities.ndim == 3:
            probabilities = probabilities[..., None]
        if len(sizes) != len(probabilities):
            raise ValueError(
                f"`sizes` needs one (H, W) per image of the batch ({len(probabilities)}). "
                f"Received: {len(sizes)} sizes"
            )
        if self.output_activation is None:
            probabilities = _sigmoid(probabilities) if self.num_classes == 1 else _softmax(probabilities)
        return [imageio.resize_image(p, tuple(int(s) for s in size)).astype(np.float32, copy=False)
                for p, size in zip(probabilities, sizes)]

    def predict(self, images):
        """Probabilities at each image's own size.

        Args:
            images: array `(N, H, W, C)` / `(N, H, W)`, one image, or a list of images of
                any sizes, values in [0, 255].

        Returns:
            float32 array `(N, H, W, K)` when all images share one size, else a list of
            `(H, W, K)` arrays. `K` is `num_classes` (1 for binary).

        Example:
        ```python
        probabilities = runner.predict([np.zeros((300, 200, 3), np.uint8)])  # (1, 300, 200, K)
        ```
        """
        images = self._as_list(images)
        sizes = [image.shape[:2] for image in images]
        if None in tuple(self.input_size):
            # Any-size model: batch the images that share a size, in their original order.
            groups = {}
            for index, image in enumerate(images):
                groups.setdefault(image.shape[:2], []).append(index)
            groups = list(groups.values())
        else:
            groups = [list(range(len(images)))]
        result = [None] * len(images)
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

    def _run_checked(self, batch):
        try:
            return self.run(batch)
        except (ValueError, RuntimeError) as error:
            if None not in tuple(self.input_size):
                raise
            raise ValueError(
                f"{self.path} could not run at input size {tuple(batch.shape[1:3])}: {error}. "
                "A model that takes any size usually needs multiples of its total stride "
                "(2**depth for a UNet, e.g. 32): resize or pad the images to such a size."
            ) from error

    def predict_masks(self, images, threshold=None):
        """Integer masks at each image's own size.

        Args:
            images: as for `predict`.
            threshold: for a binary model, `p >= threshold` is 1 (default: the metadata's,
                else 0.5). Multi-class models take the argmax.

        Returns:
            uint8 array `(N, H, W)` (a list of `(H, W)` for images of different sizes);
            int32 beyond 256 classes.

        Example:
        ```python
        masks = runner.predict_masks(images)  # binary: 0/1
        ```
        """
        probabilities = self.predict(images)
        threshold = self.threshold if threshold is None else float(threshold)
        if self.num_classes == 1:
            masks = [(p[..., 0] >= threshold).astype(np.uint8) for p in probabilities]
        else:
            dtype = np.uint8 if self.num_classes <= 256 else np.int32
            masks = [np.argmax(p, axis=-1).astype(dtype) for p in probabilities]
        return np.stack(masks) if isinstance(probabilities, np.ndarray) else masks
