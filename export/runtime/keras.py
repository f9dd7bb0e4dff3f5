"""Run a .keras file through Keras (imported only here, when a .keras file is loaded)."""

import numpy as np

from export.runtime.base import Runner


class KerasRunner(Runner):
    """A `.keras` model, on whatever Keras backend and device is active (GPU included).

    Example:
    ```python
    from export.runtime.keras import KerasRunner

    runner = KerasRunner("unet.keras")
    masks = runner.predict_masks(images)
    ```
    """

    format = "keras"

    def __init__(self, path, threads=None):
        import keras

        import keras_unet  # noqa: F401  (registers the keras_unet layers for loading)

        try:
            self.model = keras.models.load_model(path)
        except Exception as error:
            raise ValueError(f"{str(path)!r} is not a loadable Keras model: {error}") from error
        self.threads = threads
        shape = tuple(self.model.inputs[0].shape)
        self.input_size = (shape[1], shape[2])
        self.input_dtype = np.float32
        self.input_quantization = self.output_quantization = None
        self.batch_size = None
        super().__init__(path, self._metadata(shape))

    def _metadata(self, shape):
        model = self.model
        num_classes = int(getattr(model, "num_classes", None) or model.outputs[0].shape[-1])
        if hasattr(model, "output_activation"):
            activation = model.output_activation
        else:
            name = getattr(getattr(model.layers[-1], "activation", None), "__name__", None)
            activation = name if name in ("sigmoid", "softmax") else None
        return {
            "format": "keras",
            "quantization": "none",
            "input_size": [shape[1], shape[2]],
            "channels": int(shape[3]),
            "input_dtype": "float32",
            "input_range": [0, 255],
            "num_classes": num_classes,
            "class_names": getattr(model, "class_names", None),
            "output_activation": activation,
            "threshold": 0.5 if num_classes == 1 else None,
            "ignore_index": getattr(model, "ignore_index", None),
            "mask_encoding": "binary" if num_classes == 1 else "index",
        }

    def run(self, batch):
        # predict_on_batch runs the compiled function and returns numpy, which also
        # waits for a GPU to finish: the timing covers the whole computation.
        return self.model.predict_on_batch(batch)

    def close(self):
        self.model = None
