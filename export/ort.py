"""ONNX Runtime's own format (`.ort`), what ONNX Runtime Mobile loads on Android and iOS.

An `.ort` file is the ONNX export (verified against Keras as usual) converted by onnxruntime
itself: a session with `session.save_model_format = ORT` writes the graph after its
platform-independent optimizations, which is what `python -m
onnxruntime.tools.convert_onnx_models_to_ort` does. The keras_unet metadata survives the
conversion (onnxruntime keeps `metadata_props`). `.ort` is the ONNX pipeline with one more
pass (`CONVERTER.package`): after the ONNX file verified against Keras, it is converted and run
on a few images, and must give the same probabilities as the `.onnx` it came from, so the
Keras verification carries over; only then is it written.

Example:
```python
from keras_unet.export.ort import export_ort

result = export_ort("model.keras", "model_int8.ort", quantize="int8",
                    calibration_data="data/train")
```
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from keras_unet.export.onnx import CONVERTER as ONNX_CONVERTER
from keras_unet.export.options import ExportOptions
from keras_unet.export.pipeline import run_export
from keras_unet.export.result import ExportResult

# The ORT file runs the .onnx graph after onnxruntime's own rewrites: float sums may be
# reordered, nothing else.
ORT_ATOL = 1e-4


def convert_to_ort(onnx_path: Any, ort_path: Any) -> None:
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


def check_same_outputs(onnx_path: Any, ort_path: Any, images: Any, atol: float = ORT_ATOL) -> float:
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


def package(job: Any, options: Any, stamped: Any) -> bytes:
    """The ORT-format bytes of the verified ONNX file `stamped`, checked against it.

    Raises:
        VerificationError: the two differ by more than `ORT_ATOL`.
    """
    onnx_path = job.new_path("verified", ".onnx")
    onnx_path.write_bytes(stamped.model_bytes)
    ort_path = job.new_path("converted", ".ort")
    convert_to_ort(onnx_path, ort_path)
    check_same_outputs(onnx_path, ort_path, _check_images(options, stamped.metadata))
    return ort_path.read_bytes()


# The ONNX pipeline with the `.ort` package pass: the metadata inside still says "onnx" (the
# graph is ONNX's; onnxruntime reads both), the result says "ort".
CONVERTER = dataclasses.replace(ONNX_CONVERTER, out_suffix=".ort", package=package, name="ort")


def export_ort(model_or_path: Any, out: Any, **onnx_options: Any) -> ExportResult:
    """Export to ONNX (verified against Keras), then to ORT format, checked against the ONNX.

    Args:
        model_or_path: a `keras.Model` or a `.keras` file.
        out: the `.ort` file to write (replaced only once the new file passed its checks).
        **onnx_options: everything `keras_unet.export.onnx.export_onnx` takes (`quantize`,
            `calibration_data`, `verification_data`, `agreement_floor` ...): the fields of
            `keras_unet.export.options.ExportOptions`.

    Returns:
        the export's `ExportResult`: `path`, `format="ort"` and `size_bytes` of the `.ort`
        file, the rest as the ONNX export's.

    Example:
    ```python
    import keras_unet
    from keras_unet.export import export_ort

    keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2).save("unet.keras")
    result = export_ort("unet.keras", "unet.ort", progress=False)
    result.format   # 'ort'
    ```
    """
    out = Path(out)
    if out.suffix.lower() != ".ort":
        raise ValueError(f"An ORT-format file ends in '.ort'. Received: out='{out}'")
    if not out.absolute().parent.is_dir():
        raise FileNotFoundError(f"The output folder does not exist: create it first. "
                                f"Received: out='{out}'")
    return run_export(CONVERTER, ExportOptions(**onnx_options), model_or_path, out)


def _check_images(options: Any, metadata: dict, count: int = 8) -> list:
    """A few images to compare the two files on: the export's own, else the shipped sample."""
    from keras_unet.export.calibration import list_image_files, shipped_sample_dir
    from keras_unet.runtime.imageio import read_image

    source = options.verification_data
    if source is None:
        source = options.calibration_data
    if source is not None and not isinstance(source, (str, os.PathLike)):
        return list(np.asarray(source)[:count])  # images given as an array
    folder = source or shipped_sample_dir()
    channels = metadata.get("channels", 3)
    return [read_image(path, channels=channels) for path in list_image_files(folder)[:count]]
