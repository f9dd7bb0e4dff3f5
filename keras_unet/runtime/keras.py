"""Run a .keras file through Keras (imported only here, when a .keras file is loaded).

The only module under `keras_unet.runtime` that imports Keras, and only inside
`KerasRunner.__init__`, after `import keras_unet` (a `.keras` file needs keras_unet's
registered layers and the `UNet` class to load). The metadata comes from the model itself
through `keras_unet.runtime.describe.describe_model`, the description the exporter also
stores in `.tflite`/`.onnx` files (`num_classes`, `output_activation`, `class_names`,
`ignore_index`, `mask_encoding`), filled out with the tensor facts of a float32 model.
Nothing here imports the exporter or the Keras plugin's modules.

Example:
```python
from keras_unet.runtime.keras import KerasRunner

with KerasRunner("unet.keras") as runner:
    masks = runner.predict_masks(images)
```
"""

import os
from typing import Any

import numpy as np

from keras_unet.runtime.base import Runner
from keras_unet.runtime.describe import describe_model
from keras_unet.runtime.metadata import SCHEMA_VERSION, tensor_metadata
from keras_unet.version import __version__


def _import_keras():
    try:
        import keras
    except ImportError as error:
        raise ImportError("Running .keras files needs `pip install keras tensorflow`.") from error
    try:
        import keras_unet  # noqa: F401  (registers the keras_unet layers for loading)
    except ImportError as error:
        raise ImportError(
            "Running .keras files saved by keras_unet needs `pip install keras-unet-edge`."
        ) from error
    return keras


class KerasRunner(Runner):
    """A `.keras` model, on whatever Keras backend and device is active (GPU included).

    Args:
        path: the `.keras` file.
        threads: kept for the common signature; Keras' threading is set by its backend.

    Example:
    ```python
    runner = KerasRunner("unet.keras")
    masks = runner.predict_masks(images)
    ```
    """

    format = "keras"

    def __init__(self, path, threads=None) -> None:
        keras = _import_keras()
        path = os.fspath(path)
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as error:
            raise ValueError(f"{path!r} is not a loadable Keras model: {error}") from error
        self.threads = threads
        shape = tuple(self.model.inputs[0].shape)
        if len(shape) != 4:
            raise ValueError(f"{path!r}: expected an image input (N, H, W, C). Received: input shape {shape}")
        self.input_size = (shape[1], shape[2])
        self.input_dtype = np.dtype("float32")
        self.input_quantization = self.output_quantization = None
        super().__init__(path, self._metadata(shape, path))

    def _metadata(self, shape, path):
        # What an export of this model would carry, from the same description.
        facts = describe_model(self.model)
        metadata = tensor_metadata("keras", shape[1:3], facts["channels"], facts["num_classes"],
                                   self.input_dtype, "float32", quantization="none")
        metadata.update(
            schema_version=SCHEMA_VERSION,
            keras_unet_version=__version__,
            output_activation=facts["output_activation"],
            class_names=facts["class_names"],
            ignore_index=facts["ignore_index"],
            mask_encoding=facts["mask_encoding"],
            source_model=os.path.basename(path),
        )
        return metadata

    def run(self, batch) -> Any:
        # predict_on_batch runs the compiled function and returns numpy, which also
        # waits for a GPU to finish: the timing covers the whole computation.
        return self.model.predict_on_batch(batch)

    def close(self) -> None:
        self.model = None
