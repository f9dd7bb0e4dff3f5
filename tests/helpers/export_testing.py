"""Shared checks for exported files (in the spirit of keras-hub's `run_export_test`).

Every export test goes through these, so each file is checked the same way: the file is
run in its own runtime (`keras_unet.runtime.load_runner`, what an edge device uses) on
real images and compared with the Keras model's outputs, and the metadata read back from
the file (`keras_unet.runtime.read_metadata`) must describe the model.

- float32 (`quantization == "none"`): max absolute difference of the probabilities
  `<= atol` (1e-4);
- quantized: `mask_agreement(...)["agreement_iou"] >= agreement_floor` (0.95 unless the
  test states another floor), with Keras' masks as the reference, and for a binary model
  some foreground in the masks, so that the agreement is not vacuous.

The reference masks are computed here (`p >= 0.5` for one class, arg-max for more) rather
than with the library's `probabilities_to_masks`, so the check does not lean on the code
it checks.

Example:
```python
from export_testing import run_export_test

result = run_export_test(model, tmp_path, "tflite", "int8", images,
                         calibration_data=nuclei_path(), agreement_floor=0.9)
```
"""

from pathlib import Path

import numpy as np

from keras_unet.runtime import load_runner
from keras_unet.runtime.metadata import read_metadata
from keras_unet.runtime.scores import mask_agreement

# The tests' own bounds, stated here rather than taken from keras_unet.export.verify, so
# that loosening the library's defaults does not loosen the tests.
FP32_ATOL = 1e-4
DEFAULT_AGREEMENT_FLOOR = 0.95
THRESHOLD = 0.5  # the exporters' default threshold of a binary model
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "ort": ".ort"}
# What an exported file says it is: an `.ort` file is ONNX Runtime's copy of the ONNX export,
# carrying its metadata and run by the same runner.
FILE_FORMAT = {"tflite": "tflite", "onnx": "onnx", "ort": "onnx"}


def _exporter(fmt):
    if fmt == "tflite":
        from keras_unet.export.tflite import export_tflite

        return export_tflite
    if fmt == "onnx":
        from keras_unet.export.onnx import export_onnx

        return export_onnx
    if fmt == "ort":
        from keras_unet.export.ort import export_ort

        return export_ort
    raise ValueError(f"`fmt` must be one of {sorted(SUFFIXES)}. Received: fmt={fmt!r}")


def _keras_model(model_or_path):
    if isinstance(model_or_path, (str, Path)):
        import keras

        return keras.saving.load_model(model_or_path, compile=False)
    return model_or_path


def _free_path(folder, stem, suffix):
    path = Path(folder) / f"{stem}{suffix}"
    index = 1
    while path.exists():  # never export over a file an earlier call of the test made
        path = Path(folder) / f"{stem}_{index}{suffix}"
        index += 1
    return path


def model_input_size(model):
    """The `(height, width)` the model was built with; None for a free dimension."""
    return tuple(model.inputs[0].shape[1:3])


def reference_masks(probabilities):
    """Masks of Keras probabilities: `p >= 0.5` for one class, arg-max for more."""
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] >= THRESHOLD).astype(np.int64)
    return np.argmax(probabilities, axis=-1)


def check_export_metadata(path, model, fmt, quantization, input_size=None):
    """The metadata read back from `path` describes `model` exported as said. Returns it.

    Args:
        path: the exported file.
        model: the Keras model it came from.
        fmt: `"tflite"` or `"onnx"`.
        quantization: the `quantize` mode asked for.
        input_size: `(H, W)` the file should take (`(None, None)` for any size); default:
            the model's own input size.
    """
    metadata = read_metadata(path)
    assert metadata is not None, f"{path} holds no keras_unet metadata"
    num_classes = int(model.outputs[0].shape[-1])
    expected_size = list(model_input_size(model) if input_size is None else input_size)
    assert metadata["format"] == fmt, metadata
    assert metadata["quantization"] == quantization, metadata
    assert list(metadata["input_size"]) == expected_size, (metadata["input_size"], expected_size)
    assert metadata["channels"] == int(model.inputs[0].shape[-1]), metadata
    assert metadata["num_classes"] == num_classes, metadata
    if hasattr(model, "num_classes"):
        assert metadata["num_classes"] == model.num_classes, metadata
    if hasattr(model, "output_activation"):
        assert metadata["output_activation"] == model.output_activation, metadata
    assert metadata["threshold"] == (THRESHOLD if num_classes == 1 else None), metadata
    assert metadata["input_range"] == [0, 255], metadata
    return metadata


def check_export(model, result, images, *, atol=FP32_ATOL, agreement_floor=None,
                 input_size=None):
    """Run the exported file of `result` on `images` and compare it with `model`.

    Checks the export's own verification report, the file's outputs in its runtime
    against Keras (float32: max abs diff <= `atol`; quantized: agreement IoU >=
    `agreement_floor`), and its metadata (`check_export_metadata`).

    Args:
        model: the Keras model that was exported (or the path of its `.keras` file).
        result: the `ExportResult`.
        images: `(N, H, W, C)` real images in [0, 255], at the file's input size when it
            has a static one.
        atol: float32 tolerance.
        agreement_floor: quantized floor; default 0.95.
        input_size: the `(H, W)` the file should take; default: the model's.

    Returns:
        dict with `max_abs_diff` and, for a quantized file, `agreement_iou`.
    """
    model = _keras_model(model)
    floor = DEFAULT_AGREEMENT_FLOOR if agreement_floor is None else agreement_floor
    quantized = result.quantization != "none"
    report = result.verification
    if report is not None:
        assert report.passed, report.summary()
        if quantized:
            assert report.agreement_iou >= floor, report.summary()
        else:
            assert report.max_abs_diff <= atol, report.summary()

    metadata = check_export_metadata(result.path, model, FILE_FORMAT[result.format],
                                     result.quantization, input_size)
    assert metadata == result.metadata
    assert metadata["input_dtype"] == result.input_dtype, metadata
    assert metadata["output_dtype"] == result.output_dtype, metadata

    runner = load_runner(result.path)
    assert (runner.format, runner.quantization) == (FILE_FORMAT[result.format], result.quantization)
    assert runner.num_classes == metadata["num_classes"]
    images = np.asarray(images, dtype="float32")
    if None not in tuple(runner.input_size):
        # Images of another size would be resized by the runner, not compared.
        assert tuple(images.shape[1:3]) == tuple(runner.input_size), (
            images.shape, runner.input_size)
    expected = np.asarray(model.predict(images, verbose=0))
    probabilities = runner.predict(images)
    assert probabilities.shape == expected.shape, (probabilities.shape, expected.shape)
    numbers = {"max_abs_diff": float(np.max(np.abs(probabilities - expected)))}
    if not quantized:
        assert numbers["max_abs_diff"] <= atol, numbers
        return numbers
    masks = runner.predict_masks(images)
    reference = reference_masks(expected)
    assert masks.shape == reference.shape, (masks.shape, reference.shape)
    if metadata["num_classes"] == 1:
        # The model does segment something: agreement is not vacuous.
        assert np.logical_or(masks, reference).any()
    numbers["agreement_iou"] = mask_agreement(masks, reference, metadata["num_classes"])[
        "agreement_iou"]
    assert numbers["agreement_iou"] >= floor, numbers
    return numbers


def export_each(model, folder, fmt, modes, images, **common):
    """One export per entry of `modes` (`name -> exporter arguments`), verified on `images`.

    For a module fixture that converts once and lets several tests check the files.

    Example:
    ```python
    exports = export_each(model, folder, "tflite", {"none": {}, "int8": dict(quantize="int8")},
                          images, calibration_data=nuclei_path())
    ```
    """
    common.setdefault("verification_data", np.asarray(images))
    common.setdefault("verification_size", len(images))
    common.setdefault("progress", False)
    export = _exporter(fmt)
    return {name: export(model, Path(folder) / f"{name}{SUFFIXES[fmt]}", **common, **options)
            for name, options in modes.items()}


def free_size_copy(model):
    """A copy of a `keras_unet.UNet` that takes any input size, with the same weights."""
    config = dict(model.get_config(), input_shape=(None, None, model.input_shape_[-1]))
    free = type(model).from_config(config)
    free.set_weights(model.get_weights())
    return free


def run_export_test(model, tmp_path, fmt, quantize, images, *, atol=FP32_ATOL,
                    agreement_floor=None, calibration_data=None, name=None, **kwargs):
    """Export `model` to `fmt`, then check the file with `check_export`. Returns the result.

    The export verifies on `images` too (unless `verification_data` is given), so its own
    report and this independent check look at the same pixels.

    Args:
        model: a `keras.Model` or the path of a `.keras` file (exported from the path).
        tmp_path: folder to write the file into.
        fmt: `"tflite"`, `"onnx"` or `"ort"`.
        quantize: the exporter's `quantize` mode.
        images: `(N, H, W, C)` real images in [0, 255] to compare on.
        atol: float32 tolerance (1e-4).
        agreement_floor: quantized floor, also given to the exporter; default 0.95.
        calibration_data: the exporter's `calibration_data`.
        name: file stem (default: the model's name and the mode).
        **kwargs: more exporter arguments (`io_dtype`, `input_size`, `dynamic_size` ...).

    Example:
    ```python
    run_export_test(model, tmp_path, "onnx", "none", images, dynamic_batch=True)
    ```
    """
    keras_model = _keras_model(model)
    kwargs.setdefault("verification_data", np.asarray(images))
    kwargs.setdefault("verification_size", len(images))
    kwargs.setdefault("progress", False)
    if agreement_floor is not None:
        kwargs["agreement_floor"] = agreement_floor
    stem = name or f"{keras_model.name}_{quantize}"
    out = _free_path(tmp_path, stem, SUFFIXES.get(fmt, ""))
    result = _exporter(fmt)(model, out, quantize=quantize, calibration_data=calibration_data,
                            **kwargs)
    assert (result.format, result.quantization) == (fmt, quantize)
    assert Path(result.path) == out and out.is_file()
    if kwargs.get("dynamic_size"):
        input_size = (None, None)
    else:
        input_size = kwargs.get("input_size")
    check_export(keras_model, result, images, atol=atol, agreement_floor=agreement_floor,
                 input_size=input_size)
    return result
