"""The export pipeline every format shares, written once.

1. **check** the output suffix and the quantization mode (`check_output`);
2. **load** the source model, resolve its input size and build the static copy
   (`keras_unet.export.source`);
3. **calibrate**: read the real calibration images for `"int8"`
   (`keras_unet.export.calibration`);
4. **convert**: the one step a format writes itself (`Converter.convert`), plus what it
   knows about its file (`describe`) and its known traps (`diagnose`);
5. **metadata**: build it from the model and the file (`keras_unet.export.metadata`) and
   store it inside the file (`Converter.embed_metadata`);
6. **verify** the bytes against Keras on real images (`keras_unet.export.verify`);
7. **write** them atomically (`keras_unet.runtime.files.write_bytes_atomic`): a rejected
   file never replaces an earlier one.

Steps 2-3 produce an `ExportJob` (`open_job`) that lives in a temporary work folder. A
converter is a function `(job, options) -> bytes`, where `options` is the format's frozen
dataclass (`TFLiteOptions`, `ONNXOptions`), so it can be called again on the same job:
the intermediates (the SavedModel, the float ONNX graph) and the Keras reference
probabilities are cached on the job. A later step builds on that without a second
pipeline: a per-layer quantization report runs on `job.calibration` and
`job.verification_images()`, and a repair loop converts again with some layers kept in
float (ONNX: `dataclasses.replace(options, nodes_to_exclude=...)`; TFLite: the converter
of `keras_unet.export.tflite.make_converter` handed to
`tf.lite.experimental.QuantizationDebugger`) and calls `verify_bytes` until the agreement
floor holds.

Example:
```python
from keras_unet.export import pipeline
from keras_unet.export.onnx import CONVERTER, ONNXOptions

options = ONNXOptions(quantize="int8")
with pipeline.open_job("model.keras", quantize="int8", calibration_data="data/val") as job:
    first = CONVERTER.convert(job, options)
    report = pipeline.verify_bytes(job, CONVERTER, first, "int8", raise_on_failure=False)
```
"""

import contextlib
import dataclasses
import itertools
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Optional

from keras_unet.export.result import ExportResult
from keras_unet.export.verify import DEFAULT_AGREEMENT_FLOOR


@dataclasses.dataclass
class Diagnosis:
    """What a converter found out about its file besides the bytes.

    Args:
        warnings: known traps met (issued as `UserWarning` and kept in the result).
        float_ops_left: compute ops a quantized file still runs in float, by op type.
        timings_ms: latencies measured while checking the file.

    Example:
    ```python
    Diagnosis(float_ops_left={"ConvTranspose": 2}, warnings=["ConvTranspose runs in float"])
    ```
    """

    warnings: list = dataclasses.field(default_factory=list)
    float_ops_left: dict = dataclasses.field(default_factory=dict)
    timings_ms: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Converter:
    """One export format on top of the pipeline: the steps that differ between formats.

    Args:
        format: the name in the metadata and the result (`"tflite"`, `"onnx"`).
        suffix: the suffix the output file must have.
        quantize_modes: the `quantize` values the format supports.
        convert: `(job, options) -> bytes`, the file without metadata. Depends only on
            its arguments, so it may run several times on one job.
        describe: `(model_bytes) -> dict` with `input_shape`, `input_dtype`,
            `output_dtype`, `input_quantization` and `output_quantization`.
        embed_metadata: `(model_bytes, metadata) -> bytes`.
        diagnose: `(job, options, model_bytes) -> Diagnosis`, or None.
        int8_session: `(job, options) -> session` for `keras_unet.export.int8` (report
            and repair), or None.
        mask_head: `(model_bytes, num_classes, threshold) -> bytes` ending the graph with
            the mask step (`keras_unet.export.mask_head`), or None.

    Example:
    ```python
    from keras_unet.export.tflite import CONVERTER

    CONVERTER.suffix  # ".tflite"
    ```
    """

    format: str
    suffix: str
    quantize_modes: tuple
    convert: Callable
    describe: Callable
    embed_metadata: Callable
    diagnose: Optional[Callable] = None
    int8_session: Optional[Callable] = None
    mask_head: Optional[Callable] = None


@dataclasses.dataclass
class ExportJob:
    """A loaded source model with everything the converters and the checks share.

    Args:
        model: the source `keras.Model`.
        source: its name in messages and metadata (the file name, or the model name).
        facts: `num_classes`, `output_activation`, `channels` (`source.model_facts`).
        size: `(height, width)` that calibration and verification run at.
        export_size: `(height, width)` of the file, `(None, None)` for any size.
        batch: the file's batch size, None for a free batch.
        static: the copy of `model` with a fixed input (shares the weights).
        calibration: float32 `(N, H, W, C)` images in [0, 255], or None.
        work: a temporary folder that lives as long as the job.
        verification_data: images to verify on, or None (see `verification_images`).
        verification_size: at most this many verification images.
        progress: show progress bars.
        verification_masks: mask paths of the verification images (held out from a
            labelled calibration folder), or None.
        verification_source: how the verification images were chosen, for reports.
        threshold: the binary threshold masks are compared at.
        input_channels: channels of the file's input (`static`'s); differs from
            `facts["channels"]` when the file converts RGB to gray inside.

    Example:
    ```python
    with open_job(model, "int8", calibration_data="data/val") as job:
        images, source = job.verification_images()
        probabilities = job.reference()  # Keras, computed once
    ```
    """

    model: object
    source: str
    facts: dict
    size: tuple
    export_size: tuple
    batch: Optional[int]
    static: object
    calibration: object
    work: Path
    verification_data: object = None
    verification_size: int = 32
    progress: bool = True
    verification_masks: object = None
    verification_source: Optional[str] = None
    threshold: float = 0.5
    input_channels: Optional[int] = None
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)
    _counter: object = dataclasses.field(default_factory=itertools.count, repr=False)

    def __post_init__(self):
        if self.input_channels is None:
            self.input_channels = self.facts["channels"]

    def cached(self, key, build):
        """`build()` once per job and `key`; later calls return the same value."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def new_path(self, stem, suffix):
        """A fresh file name in the work folder (`stem_3.onnx`), never used before."""
        return self.work / f"{stem}_{next(self._counter)}{suffix}"

    def verification_images(self):
        """`(images, source)` to verify on, chosen once (see `select_verification_images`)."""
        from keras_unet.export.verify import select_verification_images

        def choose():
            images, source = select_verification_images(
                self.size, self.input_channels, self.verification_data, self.calibration,
                self.verification_size, self.progress)
            return images, self.verification_source or source

        return self.cached("verification_images", choose)

    def reference(self):
        """Keras probabilities on `verification_images()`, computed once.

        A model that outputs logits (`output_activation` None) gets the activation the
        runners apply (sigmoid for one class, softmax for more), so the two compare.
        """
        from keras_unet.export.verify import keras_predict

        images, _ = self.verification_images()
        logits = self.facts["output_activation"] is None
        return self.cached("reference", lambda: keras_predict(self.static, images, logits=logits))


def check_output(converter, out, quantize):
    """Raise a `ValueError` unless `quantize` is a mode of the format and `out` has its suffix.

    Example:
    ```python
    check_output(CONVERTER, "model.tflite", "int8")
    ```
    """
    if quantize not in converter.quantize_modes:
        raise ValueError(
            f"`quantize` must be one of {list(converter.quantize_modes)} for format "
            f"'{converter.format}'. Received: quantize={quantize!r}"
        )
    if Path(str(out)).suffix.lower() != converter.suffix:
        raise ValueError(
            f"The output file of a {converter.format} export must end in "
            f"'{converter.suffix}'. Received: out='{out}'"
        )


@contextlib.contextmanager
def open_job(model_or_path, quantize="none", calibration_data=None, calibration_size=100,
             input_size=None, dynamic_size=False, batch=1, verification_data=None,
             verification_size=32, progress=True, input_channels=None):
    """Load the model, fix its input and read the calibration images; yield an `ExportJob`.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        quantize: the quantization mode; `"int8"` reads `calibration_data`.
        calibration_data: a folder, a list of image paths or an array in [0, 255].
        calibration_size: at most this many calibration images.
        input_size: `(height, width)`, needed for a model that accepts any size unless
            `dynamic_size`.
        dynamic_size: the file keeps a free height and width (verified at `input_size`,
            the model's own size, or 128x128).
        batch: the file's batch size; None for a free batch.
        verification_data: images to verify on. Default for int8: images held out from
            `calibration_data` (`keras_unet.export.holdout`); otherwise the nuclei sample
            shipped with keras_unet.
        verification_size: at most this many verification images; for int8, at least
            this many (32) are held out from the calibration set where it has twice that
            many, and so are the images beyond `calibration_size`, up to half the set.
        progress: show progress bars.
        input_channels: channels of the file's input; 3 for a 1-channel model converts RGB
            to gray inside the static copy (`keras_unet.export.source.static_model`).
            Default: the model's own.

    Example:
    ```python
    with open_job("model.keras") as job:
        job.static.inputs[0].shape  # (1, 128, 128, 3)
    ```
    """
    from keras_unet.export.calibration import load_images, require_calibration
    from keras_unet.export.source import (
        DEFAULT_VERIFY_SIZE,
        load_source_model,
        model_facts,
        resolve_input_size,
        static_model,
    )

    if quantize == "int8":
        require_calibration(calibration_data, quantize, "api")
    model, source = load_source_model(model_or_path)
    if quantize != "int8" and _is_quantize_aware(model):
        # The float graph of a QAT model, without its fake-quant ops (weights on the grid).
        from keras_unet.quantization import float_copy

        model = float_copy(model)
    size = resolve_input_size(model, input_size, source, required=not dynamic_size)
    facts = model_facts(model)
    export_size = (None, None) if dynamic_size else size
    if size == (None, None):
        size = DEFAULT_VERIFY_SIZE
    # Full-integer TFLite wants each skip connection's own int8 scale (decoder_form); ONNX
    # converts its own graph (onnx.float_model) and the float modes gain nothing from it.
    static = static_model(model, size, batch_size=batch, input_channels=input_channels,
                          separate_skip_scales=quantize == "int8")
    channels = int(static.inputs[0].shape[-1])
    calibration, masks, verification_source = None, None, None
    if quantize == "int8":
        if verification_data is None:
            from keras_unet.export.holdout import split_calibration

            split = split_calibration(calibration_data, held_out=verification_size,
                                      calibration_size=calibration_size)
            calibration_data, verification_data = split.calibration, split.verification
            masks, verification_source = split.masks, split.description
            if verification_data is not None:
                verification_size = None  # the held-out images, all of them, in order
        calibration = load_images(calibration_data, size, channels, calibration_size,
                                  progress=progress)
    with tempfile.TemporaryDirectory(prefix="keras_unet_export_") as work:
        yield ExportJob(
            model=model, source=source, facts=facts, size=size, export_size=export_size,
            batch=batch, static=static, calibration=calibration, work=Path(work),
            verification_data=verification_data, verification_size=verification_size,
            progress=progress, verification_masks=masks, verification_source=verification_source,
            input_channels=channels,
        )


def verify_bytes(job, converter, model_bytes, quantization, threshold=0.5,
                 agreement_floor=DEFAULT_AGREEMENT_FLOOR, raise_on_failure=True):
    """Run `model_bytes` in its runtime against the job's Keras reference.

    Returns the `VerificationReport`; raises `VerificationError` when it fails and
    `raise_on_failure`.

    Example:
    ```python
    report = verify_bytes(job, CONVERTER, model_bytes, "int8", raise_on_failure=False)
    report.agreement_iou
    ```
    """
    from keras_unet.export.verify import verify_export

    images, source = job.verification_images()
    path = job.new_path("candidate", converter.suffix)
    path.write_bytes(model_bytes)
    try:
        return verify_export(job.static, path, images, quantization, threshold=threshold,
                             agreement_floor=agreement_floor, source=source,
                             raise_on_failure=raise_on_failure, reference=job.reference())
    finally:
        path.unlink()


def run_export(converter, options, model_or_path, out, calibration_data=None,
               calibration_size=100, input_size=None, dynamic_size=False, batch=1, verify=True,
               agreement_floor=DEFAULT_AGREEMENT_FLOOR, verification_data=None,
               verification_size=32, progress=True, repair=None, layer_report=False,
               verbose=False, input_channels=None, output="probabilities"):
    """The whole pipeline for one format: check, load, convert, describe, metadata, verify, write.

    Args:
        converter: the format's `Converter`.
        options: the format's options (a dataclass with at least `quantize`).
        model_or_path, calibration_data, calibration_size, input_size, dynamic_size,
            batch, verification_data, verification_size, progress, input_channels: see
            `open_job`.
        out: the file to write; replaced only once the new file verified.
        verify: compare with Keras and raise `VerificationError` on a mismatch.
        agreement_floor: lowest `agreement_iou` accepted for a quantized file.
        repair: int8 only: when the file misses the floor, keep the worst layers in float
            (and try other calibrations) until it meets it (`keras_unet.export.int8`).
            Default: on for int8. `True` with another mode is an error.
        layer_report: int8 only: build the per-layer report even when the first file
            passes (a repaired or refused file always gets one).
        verbose: show TensorFlow's, the converter's and the runtimes' own log lines (by
            default they are silenced for the duration of the call only; see
            `keras_unet.console.quiet`).
        output: `"probabilities"` (default) or `"mask"`: the file ends with the threshold
            (binary) or arg-max (multi-class) and outputs a `(N, H, W)` uint8 class-id mask
            (`keras_unet.export.mask_head`), checked to give the probability file's
            masks on the verification images.

    Returns:
        `ExportResult`.

    Example:
    ```python
    from keras_unet.export.tflite import CONVERTER, TFLiteOptions

    run_export(CONVERTER, TFLiteOptions(quantize="fp16"), "model.keras", "model_fp16.tflite")
    ```
    """
    from keras_unet.console.quiet import quiet_output

    with quiet_output(enabled=not verbose):
        return _run_export(converter, options, model_or_path, out, calibration_data,
                           calibration_size, input_size, dynamic_size, batch, verify,
                           agreement_floor, verification_data, verification_size, progress,
                           repair, layer_report, input_channels, output)


OUTPUTS = ("probabilities", "mask")


def _run_export(converter, options, model_or_path, out, calibration_data, calibration_size,
                input_size, dynamic_size, batch, verify, agreement_floor, verification_data,
                verification_size, progress, repair, layer_report, input_channels=None,
                output="probabilities"):
    from keras_unet.runtime.files import write_bytes_atomic

    if output not in OUTPUTS:
        raise ValueError(f"`output` must be one of {OUTPUTS}. Received: output={output!r}")
    if output == "mask" and converter.mask_head is None:
        raise ValueError(f"A mask output is not available for {converter.format} files.")
    quantize = options.quantize
    check_output(converter, out, quantize)
    check_floor(agreement_floor)
    if repair and quantize != "int8":
        raise ValueError("Repair keeps layers of an int8 file in float; it does not apply to "
                         f"quantize={quantize!r}. Received: repair={repair!r}")
    repair = quantize == "int8" if repair is None else bool(repair)
    with open_job(model_or_path, quantize, calibration_data, calibration_size, input_size,
                  dynamic_size, batch, verification_data, verification_size,
                  progress, input_channels) as job:
        made = {}

        def finish(model_bytes, calibration=None, kept_float=(), extra=None):
            info = converter.describe(model_bytes)
            metadata = _metadata(job, converter, quantize, info, calibration, kept_float, extra)
            job.threshold = metadata.get("threshold") or 0.5
            final = converter.embed_metadata(model_bytes, metadata)
            made[final] = (info, metadata)
            return final

        outcome, report = None, None
        qat = quantize == "int8" and _is_quantize_aware(job.model)
        if qat:
            if input_channels not in (None, job.facts.get("channels")):
                # The RGB -> gray step would be a float layer in front of the learned ranges.
                raise ValueError("A quantize-aware model is exported as it was trained: "
                                 "`input_channels` is not available for it; train the QAT "
                                 "model on the channels the device gives. "
                                 f"Received: input_channels={input_channels!r}")
            from keras_unet.export.qat import QATSession

            # Its learned ranges replace calibration (the calibration images only verify).
            converter = dataclasses.replace(
                converter, int8_session=lambda job, options, fmt=converter.format: QATSession(job, options, fmt))
        if quantize == "int8" and verify and converter.int8_session is not None:
            from keras_unet.export.int8 import quantize_verified

            outcome = quantize_verified(job, converter, options, finish, agreement_floor,
                                        repair=repair, want_report=layer_report)
            model_bytes, report = outcome.model_bytes, outcome.verification
        else:
            converted = (converter.int8_session(job, options).quantize([], "qat") if qat
                         else converter.convert(job, options))
            model_bytes = finish(converted, "qat" if qat else None)
            if verify:
                report = verify_bytes(job, converter, model_bytes, quantize,
                                      threshold=job.threshold, agreement_floor=agreement_floor)
        info, metadata = made[model_bytes]
        diagnosis = Diagnosis()
        if converter.diagnose is not None and not qat:  # its timings convert the float graph
            diagnosis = converter.diagnose(job, options, model_bytes)
        refused = [a for a in outcome.attempts if a.error] if outcome else []
        if refused:
            diagnosis.warnings.append(
                f"{len(refused)} int8 file(s) tried did not load in the runtime, e.g. with "
                f"{len(refused[0].kept_float)} op(s) in float: {refused[0].error}")
        for message in diagnosis.warnings:
            warnings.warn(message, UserWarning, stacklevel=3)
        truth = iou_against_truth(job, converter, model_bytes) if verify else {}
        if output == "mask":
            model_bytes, metadata = with_mask_head(job, converter, model_bytes, metadata)
            info = converter.describe(model_bytes)
        write_bytes_atomic(out, model_bytes)
    return ExportResult(
        path=str(out), format=converter.format, quantization=quantize,
        size_bytes=len(model_bytes), input_shape=info["input_shape"],
        input_dtype=info["input_dtype"], output_dtype=info["output_dtype"],
        verification=report, warnings=list(diagnosis.warnings),
        float_ops_left=dict(diagnosis.float_ops_left), metadata=metadata,
        timings_ms=dict(diagnosis.timings_ms),
        kept_float=list(outcome.kept_float) if outcome else [],
        calibration_method=outcome.calibration if outcome else None,
        repair_attempts=[a.to_dict() for a in outcome.attempts] if outcome else [],
        layer_report=outcome.layer_report if outcome else None,
        kept_float_latency_ms=dict(outcome.latency_ms) if outcome else {},
        **truth,
    )


def _is_quantize_aware(model):
    from keras_unet.quantization import is_quantize_aware

    return is_quantize_aware(model)


def check_floor(agreement_floor):
    """Raise a `ValueError` unless `agreement_floor` is a number in [0, 1]."""
    if (isinstance(agreement_floor, bool) or not isinstance(agreement_floor, (int, float))
            or not 0.0 <= agreement_floor <= 1.0):
        raise ValueError("`agreement_floor` must be a number in [0, 1] (an IoU). "
                         f"Received: agreement_floor={agreement_floor!r}")


def _metadata(job, converter, quantize, info, calibration, kept_float, extra=None):
    from keras_unet.export.metadata import build_metadata

    metadata = build_metadata(
        job.model, format=converter.format, quantization=quantize,
        input_size=job.export_size, input_dtype=info["input_dtype"],
        input_quantization=info["input_quantization"], output_dtype=info["output_dtype"],
        output_quantization=info["output_quantization"], source_model=job.source,
        channels=job.input_channels,
    )
    if calibration is not None:
        metadata["int8"] = {"calibration": calibration, "kept_float": list(kept_float),
                            **(extra or {})}
    return metadata


def iou_against_truth(job, converter, model_bytes):
    """IoU of Keras and of the file against the held-out masks, and the drop; {} without masks.

    Example:
    ```python
    iou_against_truth(job, CONVERTER, model_bytes)  # {'iou_keras': 0.79, 'iou_export': 0.789, ...}
    ```
    """
    if not job.verification_masks:
        return {}
    import numpy as np

    from keras_unet.runtime import imageio, load_runner
    from keras_unet.runtime.scores import probabilities_to_masks, segmentation_scores

    num_classes = job.facts["num_classes"]
    try:
        truth = [imageio.resize_mask(imageio.decode_mask(imageio.read_mask(path), "auto",
                                                         num_classes, job.facts.get("ignore_index"),
                                                         path=path), job.size)
                 for path in job.verification_masks]
    except (ValueError, OSError) as error:  # masks the model cannot be scored on: say so
        warnings.warn(f"IoU against the held-out masks was skipped: {error}", UserWarning,
                      stacklevel=3)
        return {}
    images, _ = job.verification_images()
    path = job.new_path("truth", converter.suffix)
    path.write_bytes(model_bytes)
    with load_runner(str(path)) as runner:
        exported = np.asarray(runner.predict(images), dtype="float32")
    ignore = job.facts.get("ignore_index")
    keras_iou = segmentation_scores(truth, probabilities_to_masks(job.reference(), job.threshold),
                                    num_classes, ignore)["iou"]
    export_iou = segmentation_scores(truth, probabilities_to_masks(exported, job.threshold),
                                     num_classes, ignore)["iou"]
    return {"iou_keras": float(keras_iou), "iou_export": float(export_iou),
            "iou_drop": float(keras_iou - export_iou)}


def with_mask_head(job, converter, model_bytes, metadata):
    """The verified probability file ending with its mask step, and its metadata.

    The mask file must give the masks the probability file gives on the verification images
    at the file's input size (where the two runners do the same resizing), pixel for pixel up
    to `MASK_HEAD_AGREEMENT`; else `VerificationError` is raised and nothing is written.
    """
    import numpy as np

    from keras_unet.export.verify import VerificationError
    from keras_unet.runtime import load_runner
    from keras_unet.runtime.resizing import resize_image

    threshold = metadata.get("threshold") or 0.5
    head = converter.mask_head(model_bytes, int(metadata["num_classes"]), threshold)
    mask_metadata = {**metadata, "output": "mask", "output_dtype": "uint8",
                     "output_quantization": None}
    head = converter.embed_metadata(head, mask_metadata)
    images, _ = job.verification_images()
    height, width = job.export_size
    if height is not None:
        images = [resize_image(np.asarray(image, np.float32), (height, width)) for image in images]
    paths = []
    for name, data in (("probabilities", model_bytes), ("mask", head)):
        path = job.new_path(name, converter.suffix)
        path.write_bytes(data)
        paths.append(path)
    try:
        with load_runner(paths[0], threads=1) as reference, load_runner(paths[1], threads=1) as masks:
            expected, got = reference.predict_masks(images), masks.predict_masks(images)
    finally:
        for path in paths:
            path.unlink()
    same = float(np.mean([np.mean(np.asarray(a) == np.asarray(b)) for a, b in zip(expected, got)]))
    if same < MASK_HEAD_AGREEMENT:
        raise VerificationError(f"The mask output gives other masks than the verified probability "
                                f"file (pixel agreement {same:.6f} < {MASK_HEAD_AGREEMENT}); "
                                "nothing was written.")
    return head, {**mask_metadata, "mask_head_pixel_agreement": round(same, 6)}


# onnxruntime optimizes a graph with the mask step appended a little differently (which
# quantize/dequantize pairs it fuses), so a probability within a rounding step of the
# threshold can fall on the other side: a few pixels in 10^4 on random images; TFLite files
# and float ONNX files agree exactly.
MASK_HEAD_AGREEMENT = 0.999
