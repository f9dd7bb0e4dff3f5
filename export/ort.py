"""ONNX Runtime's own format (`.ort`), what ONNX Runtime Mobile loads on Android and iOS.

An `.ort` file is the ONNX export (verified against Keras as usual) converted by onnxruntime
itself: a session with `session.save_model_format = ORT` writes the graph after its
platform-independent optimizations, which is what `python -m
onnxruntime.tools.convert_onnx_models_to_ort` does. The keras_unet metadata survives the
conversion (onnxruntime keeps `metadata_props`). Before the rename into place the `.ort` file is
run on the verification images and must give the same probabilities as the `.onnx` it came
from, so the Keras verification carries over.

Example:
```python
from keras_unet.export.ort import export_ort

result = export_ort("model.keras", "model_int8.ort", quantize="int8",
                    calibration_data="data/train")
```
"""

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

# The ORT file runs the .onnx graph after onnxruntime's own rewrites: float sums may be
# reordered, nothing else.
ORT_ATOL = 1e-4


def convert_to_ort(onnx_path, ort_path):
    """Write `ort_path`, the ORT-format copy of `onnx_path` (basic + extended optimizations).

    Extended, not all: the layout-specific optimizations of `ORT_ENABLE_ALL` would tie the file
    to this machine's CPU (what onnxruntime's own converter avoids too).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = os.fspath(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(os.fspath(onnx_path), options, providers=["CPUExecutionProvider"])


def check_same_outputs(onnx_path, ort_path, images, atol=ORT_ATOL):
    """Largest difference of the two files' probabilities on `images`; raises above `atol`."""
    from keras_unet.runtime import load_runner

    with load_runner(onnx_path, threads=1) as reference, load_runner(ort_path, threads=1) as ort:
        expected, got = reference.predict(images), ort.predict(images)
    difference = max(float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
                     for a, b in zip(expected, got))
    if not difference <= atol:
        from keras_unet.export.verify import VerificationError

        raise VerificationError(f"The .ort file differs from the verified .onnx by {difference:.3g} "
                                f"(more than {atol}); nothing was written.")
    return difference


def export_ort(model_or_path, out, **onnx_options):
    """Export to ONNX (verified against Keras), then to ORT format, checked against the ONNX.

    Args:
        model_or_path: a `keras.Model` or a `.keras` file.
        out: the `.ort` file to write (replaced only once the new file passed its checks).
        **onnx_options: everything `keras_unet.export.onnx.export_onnx` takes (`quantize`,
            `calibration_data`, `verification_data`, `agreement_floor` ...).

    Returns:
        the ONNX export's `ExportResult` with `path`, `format="ort"` and `size_bytes` of the
        `.ort` file.

    Example:
    ```python
    export_ort("model.keras", "model.ort")
    ```
    """
    from keras_unet.export.onnx import export_onnx
    from keras_unet.runtime.files import atomic_output

    out = Path(out)
    if out.suffix.lower() != ".ort":
        raise ValueError(f"An ORT-format file ends in '.ort'. Received: out='{out}'")
    if not out.absolute().parent.is_dir():
        raise FileNotFoundError(f"The output folder does not exist: create it first. "
                                f"Received: out='{out}'")
    with tempfile.TemporaryDirectory(prefix="keras_unet_ort_") as work:
        onnx_path = Path(work) / f"{out.stem}.onnx"
        result = export_onnx(model_or_path, onnx_path, **onnx_options)
        with atomic_output(out) as tmp:
            convert_to_ort(onnx_path, tmp)
            check_same_outputs(onnx_path, tmp, _check_images(onnx_options, result))
            size = os.path.getsize(tmp)
    return dataclasses.replace(result, path=str(out), format="ort", size_bytes=size)


def _check_images(onnx_options, result, count=8):
    """A few images to compare the two files on: the export's own, else the shipped sample."""
    from keras_unet.export.calibration import list_image_files, shipped_sample_dir
    from keras_unet.runtime.imageio import read_image

    source = onnx_options.get("verification_data")
    if source is None:
        source = onnx_options.get("calibration_data")
    if source is not None and not isinstance(source, (str, os.PathLike)):
        return list(np.asarray(source)[:count])  # images given as an array
    folder = source or shipped_sample_dir()
    channels = result.metadata.get("channels", 3)
    return [read_image(path, channels=channels) for path in list_image_files(folder)[:count]]
