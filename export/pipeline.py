"""The export pipeline every format shares, written once as a list of named passes.

1. **check** the options, the output suffix and the quantization mode (`check`);
2. **open the job**: load the source model, resolve its input size, build the static copy
   and read the calibration images (`keras_unet.export.job.open_job`);
3. **produce** the file (`produce`): the format's conversion and its declared rewrites
   (`Converter.convert`, `Converter.rewrites`), stamped with its metadata
   (`keras_unet.export.stamp`) and verified against Keras on real images
   (`keras_unet.export.verify`); for int8 with verification, the int8 step
   (`keras_unet.export.int8`) does this through the format's `Int8Session` (calibrated after
   training, or the learned ranges of a quantize-aware model: `Converter.session`);
4. **diagnose**: what the format knows about its file (`Converter.diagnose`);
5. **score** against the held-out masks when there are any (`checks.iou_against_truth`);
6. **mask head** for `output="mask"` (`checks.with_mask_head`);
7. **package** into another container when the format has one (`.ort`: `Converter.package`);
8. **write** atomically (`keras_unet.runtime.files.write_bytes_atomic`): a rejected file
   never replaces an earlier one.

Every pass reads the one `ExportOptions` (`keras_unet.export.options`) built by the caller.

Example:
```python
from keras_unet.export.options import ExportOptions
from keras_unet.export.pipeline import run_export
from keras_unet.export.tflite import CONVERTER

run_export(CONVERTER, ExportOptions(quantize="fp16"), "model.keras", "model_fp16.tflite")
```
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional

from keras_unet.export.checks import iou_against_truth, with_mask_head
from keras_unet.export.converter import Converter, Diagnosis, check_output, float_ops_phrase
from keras_unet.export.int8 import NOT_INTEGER_ONLY, Int8Outcome, quantize_verified
from keras_unet.export.job import ExportJob, open_job
from keras_unet.export.options import STATIC_MODES, ExportOptions
from keras_unet.export.result import ExportResult
from keras_unet.export.stamp import StampedFile, Stamper
from keras_unet.export.verify import VerificationReport, verify_bytes

PASSES = ("check", "open job", "produce", "diagnose", "score", "mask head", "package", "write")


@dataclasses.dataclass(frozen=True)
class Produced:
    """What the produce pass made: the stamped file, its verification, the int8 outcome.

    Args:
        file: the file with its metadata.
        verification: its `VerificationReport`, or None without verification.
        outcome: the int8 step's `Int8Outcome` (calibration, kept layers, attempts), or None.
    """

    file: StampedFile
    verification: Optional[VerificationReport]
    outcome: Optional[Int8Outcome] = None


def run_export(converter: Converter, options: ExportOptions, model_or_path: Any,
               out: Any) -> ExportResult:
    """The whole pipeline for one format (see the module docstring for its passes).

    Args:
        converter: the format's `Converter`.
        options: the export's `ExportOptions`.
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the file to write; replaced only once the new file verified.

    Returns:
        `ExportResult`.

    Example:
    ```python
    import keras_unet
    from keras_unet.export import ExportOptions, run_export
    from keras_unet.export.tflite import CONVERTER

    keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2).save("unet.keras")
    options = ExportOptions(quantize="fp16", progress=False)
    result = run_export(CONVERTER, options, "unet.keras", "unet_fp16.tflite")
    ```
    """
    from keras_unet.console.quiet import quiet_output

    with quiet_output(enabled=not options.verbose):
        return _run(converter, options, model_or_path, out)


def _run(converter: Converter, options: ExportOptions, model_or_path: Any,
         out: Any) -> ExportResult:
    from keras_unet.runtime.files import write_bytes_atomic

    conversion = check(converter, options, out)
    with open_job(model_or_path, options) as job:
        produced = produce(job, converter, conversion, options)
        diagnosis = diagnose(job, converter, conversion, produced)
        for message in diagnosis.warnings:
            warnings.warn(message, UserWarning, stacklevel=3)
        truth = iou_against_truth(job, converter, produced.file.model_bytes) if options.verify else {}
        final = with_mask_head(job, converter, produced.file) if options.output == "mask" else produced.file
        data = (final.model_bytes if converter.package is None
                else converter.package(job, options, final))
        (converter.write or write_bytes_atomic)(out, data)
    return _result(converter, options, out, data, final, produced, diagnosis, truth)


def check(converter: Converter, options: ExportOptions, out: Any) -> Any:
    """Raise a `ValueError` naming the first option the export cannot take; return the
    format's conversion options (`Converter.conversion_options`)."""
    conversion = converter.conversion_options(options)
    options.check()
    if options.output == "mask" and converter.mask_head is None:
        raise ValueError(f"A mask output is not available for {converter.format} files.")
    check_output(converter, out, options.quantize)
    return conversion


def produce(job: ExportJob, converter: Converter, conversion: Any,
            options: ExportOptions) -> Produced:
    """The file, stamped with its metadata and (unless `options.verify` is off) verified.

    int8 with verification goes through the int8 step (every calibration, repair toward
    the target); otherwise the format converts once: a quantize-aware job from its learned
    ranges (its session's one variant), any other job through `Converter.convert`.
    """
    stamp = Stamper(job, converter, options.quantize, integer_only=options.integer_only)
    if options.quantize in STATIC_MODES and options.verify:
        outcome = quantize_verified(job, converter.session(job, conversion), stamp,
                                    options.agreement_floor, repair=options.repairs,
                                    want_report=options.layer_report,
                                    integer_only=options.integer_only)
        require_integer_only(converter, options, outcome.file.model_bytes)
        return Produced(outcome.file, outcome.verification, outcome)
    if job.quantize_aware:  # its learned ranges replace calibration
        session = converter.session(job, conversion)
        variant = session.variants[0]
        file = stamp(session.quantize([], variant), {"calibration": variant, "kept_float": []})
    else:
        file = stamp(converter.rewrite(converter.convert(job, conversion), options.quantize))
    require_integer_only(converter, options, file.model_bytes)
    report = None
    if options.verify:
        report = verify_bytes(job, converter, file.model_bytes, options.quantize,
                              threshold=job.threshold, agreement_floor=options.agreement_floor)
    return Produced(file, report)


def require_integer_only(converter: Converter, options: ExportOptions, model_bytes: bytes) -> None:
    """With `integer_only`, raise a `RuntimeError` naming the ops of the file that compute in
    float (nothing is written); a format that cannot tell refuses the option."""
    if not options.integer_only:
        return
    if converter.float_ops is None:
        raise ValueError(f"`integer_only` is not available for {converter.result_format} files.")
    floats = float_ops_phrase(converter, model_bytes)
    if floats:
        raise RuntimeError(
            f"The {options.quantize} file is not integer-only: {floats}. Nothing was written. "
            "Export without --integer-only to keep them in float, or replace the layers they "
            "come from.")


def diagnose(job: ExportJob, converter: Converter, conversion: Any,
             produced: Produced) -> Diagnosis:
    """The format's findings on the file, and a note on int8 files the runtime refused."""
    diagnosis = (Diagnosis() if converter.diagnose is None
                 else converter.diagnose(job, conversion, produced.file.model_bytes))
    if getattr(conversion, "quantize", None) in STATIC_MODES and converter.npu_fallbacks is not None:
        diagnosis.npu_fallbacks = list(converter.npu_fallbacks(produced.file.model_bytes))
    outcome = produced.outcome
    if outcome is not None and outcome.shortfall:
        diagnosis.warnings.append(outcome.shortfall)
    errors = [a for a in outcome.attempts if a.error] if outcome else []
    not_integer = [a for a in errors if a.error.startswith(NOT_INTEGER_ONLY)]
    refused = [a for a in errors if a not in not_integer]
    if refused:
        diagnosis.warnings.append(
            f"{len(refused)} int8 file(s) tried did not load in the runtime, e.g. with "
            f"{len(refused[0].kept_float)} op(s) in float: {refused[0].error}")
    if not_integer:
        diagnosis.warnings.append(
            f"{len(not_integer)} file(s) tried were passed over, e.g. with "
            f"{len(not_integer[0].kept_int16)} op(s) at int16: {not_integer[0].error}")
    return diagnosis


def _result(converter: Converter, options: ExportOptions, out: Any, data: bytes,
            final: StampedFile, produced: Produced, diagnosis: Diagnosis,
            truth: dict) -> ExportResult:
    outcome = produced.outcome
    info = final.info
    return ExportResult(
        path=str(out), format=converter.result_format, quantization=options.quantize,
        size_bytes=len(data), input_shape=info["input_shape"],
        input_dtype=info["input_dtype"], output_dtype=info["output_dtype"],
        # A package that checks its own file (the IR) reports that file's verification.
        verification=getattr(data, "verification", None) or produced.verification, warnings=list(diagnosis.warnings),
        float_ops_left=dict(diagnosis.float_ops_left), metadata=final.metadata,
        timings_ms=dict(diagnosis.timings_ms),
        kept_float=list(outcome.kept_float) if outcome else [],
        calibration_method=outcome.calibration if outcome else None,
        repair_attempts=[a.to_dict() for a in outcome.attempts] if outcome else [],
        layer_report=outcome.layer_report if outcome else None,
        kept_float_latency_ms=dict(outcome.latency_ms) if outcome else {},
        kept_int16=list(outcome.kept_int16) if outcome else [],
        repair_candidates=[c.to_dict() for c in outcome.candidates] if outcome else [],
        integer_only=options.integer_only, npu_fallbacks=list(diagnosis.npu_fallbacks),
        shortfall=outcome.shortfall if outcome else None,
        **truth,
    )
