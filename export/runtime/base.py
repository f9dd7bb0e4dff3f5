"""What every runner does the same way: images in, probabilities or masks out.

A subclass only says how to run one prepared batch (`run`) and what its input tensor
looks like; resizing, channel conversion, quantization, activation and thresholds live
here once.
"""

import warnings

import numpy as np

from export.runtime import imageio


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Runner:
    """Runs one model file. Subclasses set the attributes below and implement `run`.

    Attributes:
        path: the model file.
        format: `"tflite"`, `"onnx"` or `"keras"`.
        metadata: the keras_unet metadata (derived from the model when the file has none).
        input_size: `(H, W)`, or `(None, None)` when the model takes any size.
        channels, num_classes: from the metadata.
        input_dtype: numpy dtype the model's input tensor takes.
        input_quantization: `{"scale", "zero_point"}` of an integer input, else None.
        output_quantization: likewise for the output.
        batch_size: the model's fixed batch size, or None if any batch works.
    """

    format = None

    def __init__(self, path, metadata):
        self.path = str(path)
        self.metadata = metadata

    # What subclasses provide -------------------------------------------------------
    def run(self, batch):
        """Raw output of the model for a batch made by `prepare` (the call to time)."""
        raise NotImplementedError

    def close(self):
        """Releases the runtime's resources."""

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
            if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 2, 3, 4)):
                return [images]  # one image
            return list(images)  # (N, H, W, C), or (N, H, W) grayscale
        return [np.asarray(image) for image in images]

    def _model_size(self, image):
        height, width = self.input_size
        if height is None or width is None:
            # A model that takes any size still needs multiples of its total stride; the
            # metadata cannot tell it, so keep the image's size and let the model say.
            return image.shape[:2]
        return (height, width)

    def prepare(self, images):
        """A model-ready batch: channels converted, resized, cast/quantized.

        Args:
            images: array `(N, H, W, C)` / `(N, H, W)`, one image `(H, W[, C])`, or a list
                of images of any sizes, values in [0, 255].
        """
        images = self._as_list(images)
        if not images:
            raise ValueError("`images` is empty: expected at least one image.")
        prepared = []
        for image in images:
            image = imageio.convert_channels(image, self.channels)
            size = self._model_size(image)
            image = imageio.resize_image(image.astype(np.float32), size)
            prepared.append(image)
        sizes = {p.shape[:2] for p in prepared}
        if len(sizes) > 1:
            raise ValueError(
                f"{self.path}: a model that takes any size needs images of one size per batch; "
                f"received sizes {sorted(sizes)}. Call predict() per image or resize them first."
            )
        return self._quantize_input(np.stack(prepared))

    def _quantize_input(self, batch):
        quant = self.input_quantization
        dtype = np.dtype(self.input_dtype)
        if quant and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            q = np.round(batch / float(quant["scale"]) + float(quant["zero_point"]))
            return np.clip(q, info.min, info.max).astype(dtype)
        return batch.astype(dtype)

    # Model output -> probabilities ------------------------------------------------------
    def _dequantize_output(self, raw):
        raw = np.asarray(raw)
        quant = self.output_quantization
        if quant and np.issubdtype(raw.dtype, np.integer):
            return (raw.astype(np.float32) - float(quant["zero_point"])) * float(quant["scale"])
        return raw.astype(np.float32)

    def postprocess(self, raw, sizes):
        """Probabilities `(H, W, K)` per image, resized back to `sizes` (a list of (H, W))."""
        probabilities = self._dequantize_output(raw)
        if probabilities.ndim == 3:
            probabilities = probabilities[..., None]
        if self.metadata.get("output_activation") is None:
            probabilities = _sigmoid(probabilities) if self.num_classes == 1 else _softmax(probabilities)
        return [imageio.resize_image(p, tuple(size)) for p, size in zip(probabilities, sizes)]

    def predict(self, images):
        """Probabilities at each image's own size.

        Returns:
            float32 array `(N, H, W, K)` when all images share one size, else a list of
            `(H, W, K)` arrays. `K` is `num_classes` (1 for binary).
        """
        images = self._as_list(images)
        sizes = [image.shape[:2] for image in images]
        outputs = []
        fixed = None not in tuple(self.input_size)
        # A fixed-size model takes the whole list as one batch; an any-size model runs
        # images of different sizes one at a time.
        groups = [images] if fixed else [[image] for image in images]
        for group in groups:
            outputs.append(self._run_batch(self.prepare(group)))
        raw = np.concatenate(outputs, axis=0)
        result = self.postprocess(raw, sizes)
        if len(set(sizes)) == 1:
            return np.stack(result)
        return result

    def _run_batch(self, batch):
        """`run` on a batch of any length; a batch-1 model runs image by image."""
        fixed = getattr(self, "batch_size", None)
        if fixed is None or len(batch) == fixed:
            return np.asarray(self.run(batch))
        if fixed != 1:
            raise ValueError(
                f"{self.path}: the model takes batches of exactly {fixed}. Received: {len(batch)} images"
            )
        return np.concatenate([np.asarray(self.run(batch[i : i + 1])) for i in range(len(batch))])

    def predict_masks(self, images, threshold=None):
        """Integer masks at each image's own size: `p >= threshold` (binary) or argmax."""
        probabilities = self.predict(images)
        threshold = self.threshold if threshold is None else float(threshold)
        if self.num_classes == 1:
            masks = [(p[..., 0] >= threshold).astype(np.uint8) for p in probabilities]
        else:
            masks = [np.argmax(p, axis=-1).astype(np.uint8 if self.num_classes <= 256 else np.int32)
                     for p in probabilities]
        return np.stack(masks) if isinstance(probabilities, np.ndarray) else masks


def derived_metadata(fmt, input_size, channels, num_classes, input_dtype, output_dtype,
                     input_quantization=None, output_quantization=None, path=None):
    """Metadata for a file exported by something else: what its tensors tell, plus defaults."""
    warnings.warn(
        f"{path}: no keras_unet metadata in this file; assuming images in [0, 255] and "
        f"{'sigmoid' if num_classes == 1 else 'softmax'} probabilities at the output.",
        stacklevel=3,
    )
    return {
        "schema_version": None,
        "format": fmt,
        "quantization": "int8" if input_quantization else "none",
        "input_size": list(input_size),
        "channels": int(channels),
        "input_dtype": str(np.dtype(input_dtype)),
        "input_range": [0, 255],
        "input_quantization": input_quantization,
        "output_dtype": str(np.dtype(output_dtype)),
        "output_quantization": output_quantization,
        "num_classes": int(num_classes),
        "class_names": None,
        "output_activation": "sigmoid" if num_classes == 1 else "softmax",
        "threshold": 0.5 if num_classes == 1 else None,
        "ignore_index": None,
        "mask_encoding": "binary" if num_classes == 1 else "index",
    }
