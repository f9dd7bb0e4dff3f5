"""A verified `.onnx` export -> OpenVINO IR (`.xml` + `.bin`): convert, stamp, verify, write.

The OpenVINO format is the ONNX pipeline with a package pass (`package`), as `.ort` is: the
ONNX file is made and verified against Keras first (int8 with its calibrations and repair),
then `openvino.convert_model` turns that very file into an `ov.Model`, which carries the
keras_unet metadata in its rt_info under `keras_unet` (the JSON text of the ONNX file's,
`ov.Model.set_rt_info(text, "keras_unet")`) and is saved with `compress_to_fp16=False`:
OpenVINO's default halves the float weights, which put a float32 IR 1.3e-3 from Keras. The
IR is then verified against Keras on the same images with the same bound as any file of its
mode (float32: max_abs_diff <= 1e-4; quantized: `agreement_iou >= agreement_floor`), through
`keras_unet.runtime.load_runner` (the OpenVINO runner, float32 precision), before anything
is written.

int8 converts the verified QDQ ONNX file: OpenVINO folds each QuantizeLinear /
DequantizeLinear pair into its FakeQuantize ops and runs them on its int8 kernels. NNCF
(`nncf.quantize` of the float IR) was measured against it and did not earn its place as a
dependency. Why: see docs/notes/2026-12-06-openvino-int8.md.

Writing (`write_ir_atomic`): both files go to temporary names beside `out`, then the old
`.xml` is removed, the `.bin` renamed, the `.xml` renamed last. An interruption between those
steps leaves no `.xml` (a model that does not load, and says so), never a new `.bin` under an
old `.xml`, which OpenVINO could read as a model with the wrong weights.

Example:
```python
from keras_unet.export.openvino_convert import IRFiles, write_ir_atomic

write_ir_atomic("unet.xml", IRFiles(xml=xml_bytes, weights=bin_bytes))
```
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from keras_unet.export.onnx import conversion_options as onnx_conversion_options
from keras_unet.export.options import ExportOptions
from keras_unet.runtime.metadata_schema import METADATA_KEY

IR_SUFFIX = ".xml"
WEIGHTS_SUFFIX = ".bin"


@dataclasses.dataclass(frozen=True)
class IRFiles:
    """One OpenVINO IR model: the `.xml` graph and its `.bin` weights, and how it verified.

    Args:
        xml: the `.xml` file's bytes.
        weights: the `.bin` file's bytes.
        verification: the IR's own `VerificationReport` against Keras, or None unverified.

    `len()` is the size of both files, what `ExportResult.size_bytes` reports.
    """

    xml: bytes
    weights: bytes
    verification: Any = None

    def __len__(self) -> int:
        return len(self.xml) + len(self.weights)


def weights_path(xml_path: Any) -> Path:
    """The `.bin` beside an `.xml` (same folder and stem: where OpenVINO looks for it)."""
    return Path(xml_path).with_suffix(WEIGHTS_SUFFIX)


def require_openvino() -> Any:
    """The `openvino` module, or an `ImportError` naming the extra to install."""
    try:
        import openvino
    except ImportError as error:
        raise ImportError('Exporting OpenVINO IR needs `pip install "keras-unet-edge[openvino]"` '
                          "(or `pip install openvino`).") from error
    return openvino


def conversion_options(options: ExportOptions) -> Any:
    """The ONNX conversion options of an OpenVINO export; raises for what IR cannot honour."""
    require_openvino()
    if options.output != "probabilities":
        raise ValueError("An OpenVINO IR export outputs probabilities (the runner thresholds "
                         f"them). Received: output={options.output!r}")
    if options.input_channels is not None:
        raise ValueError("`input_channels` applies to TFLite only; an IR file takes the model's "
                         f"own channels. Received: input_channels={options.input_channels!r}")
    return onnx_conversion_options(options)


def convert_onnx_to_ir(onnx_path: Any, xml_path: Any, metadata: dict) -> None:
    """Write `xml_path` and its `.bin`: the IR of `onnx_path`, float weights kept as they are,
    `metadata` in its rt_info under `keras_unet`."""
    from keras_unet.export.metadata import metadata_json

    openvino = require_openvino()
    model = openvino.convert_model(str(onnx_path))
    model.set_rt_info(metadata_json(metadata), METADATA_KEY)
    openvino.save_model(model, str(xml_path), compress_to_fp16=False)


def package(job: Any, options: ExportOptions, stamped: Any) -> IRFiles:
    """The IR of the stamped (and verified) ONNX file, verified against Keras itself.

    Raises:
        VerificationError: the IR misses its mode's bound (nothing is written).
    """
    onnx_path = job.new_path("verified", ".onnx")
    onnx_path.write_bytes(stamped.model_bytes)
    xml_path = job.new_path("converted", IR_SUFFIX)
    convert_onnx_to_ir(onnx_path, xml_path, stamped.metadata)
    report = _verify(job, options, xml_path) if options.verify else None
    return IRFiles(xml_path.read_bytes(), weights_path(xml_path).read_bytes(), report)


def _verify(job: Any, options: ExportOptions, xml_path: Path) -> Optional[Any]:
    from keras_unet.export.verify import verify_export

    images, source = job.verification_images()
    return verify_export(job.static, xml_path, images, options.quantize, threshold=job.threshold,
                         agreement_floor=options.agreement_floor, source=source,
                         reference=job.reference())


def write_ir_atomic(out: Any, files: IRFiles) -> Path:
    """Write `files` as `out` (`.xml`) and its `.bin` through temporary files and renames.

    The old `.xml` is removed before the new `.bin` takes its place and the new `.xml` is
    renamed last (see the module docstring for an interruption between them).

    Example:
    ```python
    write_ir_atomic("unet.xml", IRFiles(xml=xml_bytes, weights=bin_bytes))
    ```
    """
    from keras_unet.runtime.files import atomic_output

    out = Path(out).absolute()
    with atomic_output(out) as xml_tmp:
        xml_tmp.write_bytes(files.xml)
        with atomic_output(weights_path(out)) as weights_tmp:
            weights_tmp.write_bytes(files.weights)
            out.unlink(missing_ok=True)  # never a new .bin under the old .xml
        # the .bin is in place here; leaving the outer block renames the .xml
    return out
