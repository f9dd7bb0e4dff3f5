"""The Keras side of an export: load the source model and fix its input shape.

Example:
```python
from keras_unet.export.source import load_source_model, resolve_input_size, static_model

model, source = load_source_model("model.keras")
height, width = resolve_input_size(model, input_size=None, source=source)
fixed = static_model(model, (height, width))  # batch 1, static spatial size
```
"""

from pathlib import Path
from typing import Any

import numpy as np

# What a model is (input shape, classes, activation) has one definition, in the runtime.
from keras_unet.export.decoder_form import export_form
from keras_unet.runtime.describe import describe_model, model_input_shape

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
# A fully convolutional model with no fixed size is verified at this size when the
# caller gives none (any multiple of 2**depth works for a UNet of depth <= 7).
DEFAULT_VERIFY_SIZE = (128, 128)


def load_source_model(model_or_path) -> tuple:
    """Return `(model, source_name)` for a `keras.Model` or the path of a saved one.

    Args:
        model_or_path: a `keras.Model`, or the path of a `.keras` (or legacy `.h5`) file.

    Example:
    ```python
    model, source = load_source_model("runs/unet/model.keras")
    ```
    """
    import keras

    import keras_unet  # noqa: F401  (registers the UNet layers for load_model)

    if isinstance(model_or_path, keras.Model):
        return model_or_path, model_or_path.name
    if not isinstance(model_or_path, (str, Path)):
        raise ValueError(
            "`model` must be a keras.Model or the path of a .keras file. "
            f"Received: model={model_or_path!r}"
        )
    path = Path(model_or_path)
    if not path.exists():
        raise FileNotFoundError(f"No Keras model at this path. Received: model='{path}'")
    if path.is_dir() or path.suffix.lower() not in KERAS_SUFFIXES:
        raise ValueError(
            "`model` must be a Keras model file saved with `model.save('model.keras')` "
            f"(suffix one of {list(KERAS_SUFFIXES)}). Received: model='{path}'"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # load_model raises many types for a bad file
        raise ValueError(
            f"Could not read a Keras model from '{path}': it is not a valid .keras file "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"Received: model='{path}'"
        ) from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"'{path}' does not hold a keras.Model. Received: model='{path}'")
    return model, path.name


def _check_size(input_size):
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
    ):
        raise ValueError(
            f"`input_size` must be (height, width), two positive integers. "
            f"Received: input_size={input_size!r}"
        )
    return int(input_size[0]), int(input_size[1])


def resolve_input_size(model, input_size=None, source="model", required=True) -> tuple:
    """The static `(height, width)` to export at.

    Order: `input_size` if given, else the model's own static input size. A model that
    accepts any size (`None` height/width) needs `input_size` when `required`.

    Args:
        model: the Keras model.
        input_size: `(height, width)` or None.
        source: name used in error messages.
        required: raise if no static size can be found; else return `(None, None)`.

    Example:
    ```python
    resolve_input_size(model, (256, 256))
    ```
    """
    if input_size is not None:
        return _check_size(input_size)
    height, width, _ = model_input_shape(model)
    if height is None or width is None:
        # UNet records the shape it was built with; a None there means any size.
        recorded = getattr(model, "input_shape_", None)
        if recorded and recorded[0] is not None and recorded[1] is not None:
            return int(recorded[0]), int(recorded[1])
        if not required:
            return None, None
        multiple = 2 ** getattr(model, "depth", 0) if hasattr(model, "depth") else None
        hint = f" (multiples of {multiple} for this UNet)" if multiple else ""
        raise ValueError(
            f"'{source}' accepts any input size (input shape {(None, height, width)}), "
            "but this export needs a static one: pass input_size=(height, width) "
            f"(CLI: --input-size H W){hint}. Received: input_size=None"
        )
    return int(height), int(width)


# ITU-R 601-2 luma, the weights `keras_unet.runtime.images.convert_channels` (and Pillow's
# "L" mode) use to turn RGB into gray.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_gray_layer(name="rgb_to_gray") -> Any:
    """A frozen 1x1 `Conv2D` (no bias) that turns `(..., 3)` RGB into `(..., 1)` luma.

    A 1x1 convolution is one CONV_2D in TFLite (XNNPACK takes it, and full int8 quantizes
    it per channel), where `keras.ops.image.rgb_to_grayscale` would add a reduction.

    Example:
    ```python
    gray = rgb_to_gray_layer()(keras.Input((128, 128, 3)))   # (None, 128, 128, 1)
    ```
    """
    import keras

    weights = np.asarray(LUMA_WEIGHTS, "float32").reshape(1, 1, 3, 1)
    return keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name=name,
                               kernel_initializer=keras.initializers.Constant(weights))


def file_input_channels(model, input_channels=None) -> int:
    """The channels a file exported from `model` takes: the model's, or 3 where
    `input_channels=3` puts an RGB -> gray step in front of a 1-channel model (`static_model`).
    Raises ValueError for any other request."""
    return _check_input_channels(input_channels, model_input_shape(model)[2])


def _check_input_channels(input_channels, channels):
    if input_channels is None or input_channels == channels:
        return channels
    if isinstance(input_channels, bool) or input_channels != 3 or channels != 1:
        raise ValueError(
            "`input_channels` can only make a 1-channel model take RGB (input_channels=3; "
            f"gray is computed inside the model). This model takes {channels} channel(s). "
            f"Received: input_channels={input_channels!r}"
        )
    return 3


def static_model(model, input_size, batch_size=1, input_channels=None,
                 separate_skip_scales=False, join_scales=None, checked_run=None) -> Any:
    """A functional wrapper of `model` with a fixed `(batch, H, W, C)` input.

    TFLite wants static shapes: a `None` spatial size becomes `1x1` in the converted file
    (the runtime must then resize the input tensor), and a `None` batch makes every
    `Conv2DTranspose` compute its output shape at run time (SHAPE/STRIDED_SLICE/PACK
    ops), which keeps XNNPACK from taking those layers. The wrapper shares the weights and
    computes the decoder in its export form (`keras_unet.export.decoder_form`: 2x2
    up-convolutions as 1x1 convolutions plus a pixel shuffle; with `separate_skip_scales`, skip
    connections that keep their own int8 scale), checked against the model on one image.

    Args:
        model: the Keras model.
        input_size: `(height, width)`.
        batch_size: the static batch size (None keeps it dynamic).
        input_channels: channels of the wrapper's input. `3` for a 1-channel model puts
            an RGB -> gray conversion (ITU-R 601 luma, `rgb_to_gray_layer`) in front of
            it, so the file takes RGB (MediaPipe needs 3 channels). Default: the model's.
        separate_skip_scales: for full-integer TFLite (see `export_form`).
        join_scales: equalized skip connections, for int8 (see `export_form`).
        checked_run: `check_runs_at(model, input_size, batch_size)` where the caller ran it
            already (the export job, before it loads calibration images); else it runs here.

    Example:
    ```python
    fixed = static_model(model, (128, 128))
    rgb = static_model(gray_model, (128, 128), input_channels=3)   # takes (1, 128, 128, 3)
    ```
    """
    import keras

    height, width = _check_size(input_size)
    _, _, model_channels = model_input_shape(model)
    channels = _check_input_channels(input_channels, model_channels)
    inputs = keras.Input(
        shape=(height, width, channels), batch_size=batch_size, name="image", dtype="float32"
    )
    if checked_run is None:
        checked_run = check_runs_at(model, (height, width), batch_size)
    sample, expected = checked_run
    try:
        x = inputs if channels == model_channels else rgb_to_gray_layer()(inputs)
        graph = export_form(model, separate_skip_scales=separate_skip_scales,
                            join_scales=join_scales)
        outputs = graph(x, training=False)
        fixed = keras.Model(inputs, outputs, name=model.name)
    except ValueError as error:
        raise ValueError(
            f"The model cannot run at input_size={(height, width)}: {error}"
        ) from error
    if graph is not model:
        _check_same_outputs(graph, sample, expected)
    return fixed


def check_runs_at(model, input_size, batch_size=1):
    """Run `model` once on a random batch at `input_size`; returns `(sample, output)`.

    Symbolic calls skip shape checks that only run on real tensors (a UNet's "multiple of
    2**depth"); this real call surfaces them as one ValueError naming the size, before an
    export spends time on calibration images.
    """
    height, width = _check_size(input_size)
    channels = model_input_shape(model)[2]
    sample = np.random.default_rng(0).uniform(
        0, 255, (batch_size or 1, height, width, channels)).astype("float32")
    try:
        return sample, np.asarray(model(sample, training=False))
    except ValueError as error:
        raise ValueError(
            f"The model cannot run at input_size={(height, width)}: {error}"
        ) from error


def _check_same_outputs(graph, sample, expected):
    """The export form must compute what the model computes (summation order aside)."""
    got = np.asarray(graph(sample, training=False), "float32")
    expected = np.asarray(expected, "float32")
    # float16 / bfloat16 layers (mixed precision) round every sum to ~3 decimal digits.
    low_precision = any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
                        for layer in graph.layers)
    tolerance = (1e-2 if low_precision else 1e-4) * (1.0 + float(np.max(np.abs(expected))))
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= tolerance:
        raise RuntimeError(
            f"The export form of the model differs from the model by {difference:.3g} "
            f"(allowed {tolerance:.3g}); please report this with the model's config."
        )


def model_facts(model) -> dict:
    """`num_classes`, `output_activation`, `channels` of the model, for the export job.

    A view of `keras_unet.runtime.describe.describe_model`, the one description of a model
    that the metadata and the `.keras` runner share: a `keras_unet.UNet` reports its own;
    for another model, the last layer's activation and the output channel count decide.

    Example:
    ```python
    model_facts(model)  # {"num_classes": 1, "output_activation": "sigmoid", "channels": 3}
    ```
    """
    facts = describe_model(model)
    return {key: facts[key] for key in ("num_classes", "output_activation", "channels")}
