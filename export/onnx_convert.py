"""Keras -> `.onnx` bytes: the float graph of an export job, its int8 quantization, what a
file is and what onnxruntime runs of it.

The format's own steps for `keras_unet.export.onnx` (the choices are told there): the float
graph through `model.export(format="onnx")` once per job and opset (`float_model`), the graph
prepared for quantization once (`prepared_model`), `quantize_static` in QDQ format
(`quantize_int8`: int8, int16x8 or int8 with some nodes at int16), and the graph
onnxruntime's CPU provider actually runs (`runtime_graph`, `float_ops_left`: speed on this
CPU). What a file leaves unquantized, whatever runs it, and what an NPU would not take:
`float_ops`, `npu_fallbacks` (`keras_unet.export.onnx_integer`).

Example:
```python
from keras_unet.export.onnx_convert import ONNXOptions, convert

model_bytes = convert(job, ONNXOptions(quantize="fp16"))
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from keras_unet.export.decoder_form import export_form
from keras_unet.export.onnx_calibration import READER_IMAGES, range_overrides
from keras_unet.export.quantization.variants import parse_variant
from keras_unet.export.onnx_integer import float_ops, npu_fallbacks  # noqa: F401  (the format's answers)
from keras_unet.export.options import DEFAULT_OPSET

QUANTIZE_MODES = ("none", "fp16", "int8", "int16x8")
ACTIVATION_TYPES = ("uint8", "int8")
# Percentile first: it agreed better on every model of the int8 matrix.
CALIBRATE_METHODS = ("percentile", "minmax", "entropy")
INPUT_NAME = "image"
# Compute-heavy op types; any of these left outside QLinear*/integer kernels in the
# graph onnxruntime runs is float work inside an "int8" model.
# An int8 file that gains less than this over float32 is reported (as for TFLite).
MIN_INT8_SPEEDUP = 1.5
HEAVY_OPS = ("Conv", "ConvTranspose", "FusedConv", "MatMul", "Gemm", "FusedMatMul", "FusedGemm")


@dataclasses.dataclass(frozen=True)
class ONNXOptions:
    """How `convert` turns the job's model into a `.onnx` file.

    Args:
        quantize: `"none"`, `"fp16"`, `"int8"` or `"int16x8"` (int16 activations on every op,
            int8 per-channel weights; `activation_type` does not apply).
        opset: ONNX opset (13 or newer; QDQ per-channel needs 13).
        activation_type: `"uint8"` or `"int8"` activations for int8, or `"auto"`: quantize
            both, time them on this machine and keep the faster (recorded in the
            metadata). uint8 ran the seed model 1.6x faster on an AVX-512 VNNI CPU.
        nodes_to_exclude: names of nodes of the float graph that int8 leaves unquantized.
            Name a Conv together with the activation after it: onnxruntime's CPU provider
            turns a float Conv that still sits between Q/DQ pairs back into a QLinearConv
            (seen with onnxruntime 1.32).
        calibrate_method: activation ranges: `"percentile"` (default: clipped at the
            99.99th percentile on each side, measured by
            `keras_unet.export.quantization.onnx_ranges`), `"minmax"` (full calibration
            range) or `"entropy"` (onnxruntime's); with `"+bias"` (`"percentile+bias"`),
            each Conv's bias is also corrected for its int8 weights
            (`keras_unet.export.quantization.bias_correction`); with `"+gptq"`, each
            Conv's weights are rounded against the calibration images
            (`keras_unet.export.quantization.weight_rounding`).
        keep_int16: int8: names of nodes of the float graph written with int16 activations
            (int8 weights), the rest int8; Q/DQ pairs convert between the two at the edges
            (`keras_unet.export.quantization.onnx_precision`).
        integer_only: no node left in float: `nodes_to_exclude` must be empty.

    Example:
    ```python
    ONNXOptions(quantize="int8", nodes_to_exclude=(
        "unet_1/encoder_block_0_1/conv1_1/convolution", "unet_1/encoder_block_0_1/act1_1/Relu"))
    ```
    """

    quantize: str = "none"
    opset: int = DEFAULT_OPSET
    activation_type: str = "auto"
    nodes_to_exclude: tuple = ()
    calibrate_method: str = "percentile"
    threads: int = 2
    keep_int16: tuple = ()
    integer_only: bool = False

    def __post_init__(self):
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset < 13:
            raise ValueError(f"`opset` must be an integer >= 13. Received: opset={self.opset!r}")
        if self.activation_type not in ACTIVATION_TYPES + ("auto",):
            raise ValueError(
                f"`activation_type` must be 'uint8', 'int8' or 'auto'. "
                f"Received: activation_type={self.activation_type!r}"
            )
        if parse_variant(self.calibrate_method).base not in CALIBRATE_METHODS:
            raise ValueError(
                f"`calibrate_method` must be one of {list(CALIBRATE_METHODS)}, or one of "
                f"them with '+bias' or '+gptq'. "
                f"Received: calibrate_method={self.calibrate_method!r}"
            )
        if self.integer_only and self.nodes_to_exclude:
            raise ValueError("An integer-only file keeps no node in float; `nodes_to_exclude` must "
                             f"be empty. Received: nodes_to_exclude={list(self.nodes_to_exclude)[:3]}")


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Mute tf2onnx/onnxruntime INFO/WARNING logs; restore their levels afterwards."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "onnxruntime")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def float_model(job: Any, opset: int) -> Path:
    """Path of the job's float32 ONNX graph at `opset`, converted once per job.

    Example:
    ```python
    float_model(job, 17)  # PosixPath('/tmp/keras_unet_export_.../float_0.onnx')
    ```
    """
    import keras

    def build():
        path = job.new_path("float", ".onnx")
        height, width = job.export_size
        spec = keras.InputSpec(shape=(job.batch, height, width, job.facts["channels"]),
                               dtype="float32", name=INPUT_NAME)
        try:
            # The same graph as job.static (1x1 conv + pixel shuffle for 2x2 up-convolutions:
            # onnxruntime has no int8 ConvTranspose; caffe and symmetric normalisation as a
            # 1x1 conv, which its quantizer quantizes where it leaves Sub and ReverseSequence
            # in float; the int8 job's equalized skip connections), with the batch and size
            # asked for.
            graph = job.cached("export_form",
                               lambda: export_form(job.model, normalization_as_conv=True,
                                                   join_scales=job.join_scales))
            with quiet_logs():
                graph.export(str(path), format="onnx", verbose=False,
                             input_signature=[spec], opset_version=opset)
        except Exception as error:  # tf2onnx raises many types; name the cause
            raise RuntimeError(
                f"ONNX conversion (tf2onnx, opset {opset}) failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from error
        return path

    return job.cached(("onnx_float", opset), build)


def prepare_for_int8(float_path: Any, out: Any) -> None:
    """Write the float graph at `float_path` as `quantize_static` should read it to `out`:
    `quant_pre_process` (no symbolic shape inference) and the NHWC pixel shuffle
    (`keras_unet.export.onnx_layout`: onnxruntime otherwise moves the decoder to NCHW)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from keras_unet.export.onnx_layout import nhwc_pixel_shuffle

    with quiet_logs():
        quant_pre_process(str(float_path), str(out), skip_symbolic_shape=True)
    onnx.save(nhwc_pixel_shuffle(onnx.load(str(out))), str(out))


def prepared_model(job: Any, opset: int) -> Path:
    """The float graph to quantize, once per job: after `quant_pre_process` (no symbolic
    shape inference), with each pixel shuffle in the NHWC form (`onnx_layout`)."""
    def build():
        path = job.new_path("prepared", ".onnx")
        prepare_for_int8(float_model(job, opset), path)
        return path

    return job.cached(("onnx_prepared", opset), build)


def quantize_int8(job: Any, options: ONNXOptions) -> bytes:
    """The QDQ file of the job's float graph for `options` (`"int8"`, with any
    `keep_int16` nodes at int16 activations, or `"int16x8"`), as `quantize_static` writes it
    (the pipeline then applies `keras_unet.export.rewrites.ONNX_REWRITES`).

    16-bit activations need QuantizeLinear/DequantizeLinear of opset 21, to which
    `quantize_static` converts the graph itself (onnx's version converter; node names stay).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from keras_unet.export.calibration import onnx_calibration_reader, pin_input_range

    out = job.new_path("int8", ".onnx")
    # "percentile" is ours, not onnxruntime's (see quantization.onnx_ranges): min/max
    # calibration with each intermediate tensor's range overridden.
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.MinMax}
    variant = parse_variant(options.calibrate_method)
    method = variant.base
    source = prepared_model(job, options.opset)
    if variant.corrected:
        source = bias_corrected_model(job, options.opset, options.nodes_to_exclude)
    elif variant.rounded:
        source = weight_rounded_model(job, options.opset, options.nodes_to_exclude)
    extra = {}
    images = pin_input_range(job.calibration)
    if method in ("percentile", "minmax"):
        # Our own ranges (bounded memory) for every tensor; onnxruntime's calibration then
        # only needs to see a few images (it keeps all of them in memory at once).
        # The ranges of the uncorrected graph: a corrected bias moves a mean by a fraction
        # of one int8 step.
        extra["TensorQuantOverrides"] = range_overrides(
            job, prepared_model(job, options.opset), options.opset, method, INPUT_NAME,
            narrow_softmax=options.quantize != "int16x8")
        images = images[:READER_IMAGES]  # onnxruntime still calibrates the pinned input
    # The Entropy calibrator prints its progress to stdout.
    uint8 = options.activation_type != "int8" and options.quantize != "int16x8"
    # "auto" without the int8 session (no verification): the usual winner.
    activation = QuantType.QUInt8 if uint8 else QuantType.QInt8
    if options.quantize == "int16x8":
        activation = QuantType.QInt16
    elif options.keep_int16:
        extra["TensorQuantOverrides"] = _int16_overrides(job, options, activation,
                                                         extra.get("TensorQuantOverrides", {}))
    if options.integer_only:
        # onnxruntime quantizes a data-movement op (Transpose, Reshape) only when its input
        # is quantized already; the layout Transpose tf2onnx puts on the graph input (in
        # front of a caffe normalisation's Conv) would stay in float. An integer-only file
        # keeps nothing in float, so every such op is quantized.
        extra["ForceQuantizeNoInputCheck"] = True
    with quiet_logs(), contextlib.redirect_stdout(io.StringIO()), \
            depth_to_space_quantized(uint8), opset_bump_quiet(activation != QuantType.QInt16
                                                               and not options.keep_int16):
        quantize_static(
            str(source), str(out),
            onnx_calibration_reader(images, INPUT_NAME, progress=job.progress),
            quant_format=QuantFormat.QDQ,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=list(options.nodes_to_exclude),
            calibrate_method=methods[method],
            extra_options=extra,
        )
    return out.read_bytes()


def bias_corrected_model(job: Any, opset: int, exclude: tuple = ()) -> Path:
    """The prepared float graph with each Conv's bias corrected for its int8 weights
    (`quantization.bias_correction`), the nodes in `exclude` (kept in float) left as they
    are; once per job and `exclude`."""
    import onnx

    from keras_unet.export.onnx_calibration import activation_sampler
    from keras_unet.export.quantization.bias_correction import onnx_correct_biases

    def build():
        prepared = prepared_model(job, opset)
        means = activation_sampler(job, prepared, opset, INPUT_NAME).channel_means()
        path = job.new_path("bias_corrected", ".onnx")
        onnx.save(onnx_correct_biases(onnx.load(str(prepared)), means, exclude), str(path))
        return path

    return job.cached(("onnx_bias_corrected", opset, tuple(sorted(exclude))), build)


def weight_rounded_model(job: Any, opset: int, exclude: tuple = ()) -> Path:
    """The prepared float graph with each Conv's weights rounded against the calibration
    images (`quantization.weight_rounding`), the nodes in `exclude` (kept in float) left as
    they are; the moments once per job, the graph once per job and `exclude`."""
    import onnx

    from keras_unet.export.calibration import pin_input_range
    from keras_unet.export.quantization.weight_rounding import (onnx_input_moments,
                                                                onnx_round_weights)

    prepared = prepared_model(job, opset)
    moments = job.cached(("onnx_input_moments", opset), lambda: onnx_input_moments(
        prepared, pin_input_range(job.calibration), INPUT_NAME, progress=job.progress))

    def build():
        path = job.new_path("weights_rounded", ".onnx")
        memo = job.cached(("onnx_rounded_kernels", opset), dict)  # one GPTQ solve per kernel
        onnx.save(onnx_round_weights(onnx.load(str(prepared)), moments, exclude, memo), str(path))
        return path

    return job.cached(("onnx_weights_rounded", opset, tuple(sorted(exclude))), build)


def _int16_overrides(job, options, activation, ranges):
    """`TensorQuantOverrides` putting `options.keep_int16` (with the activation each Conv
    fuses with) at int16 activations in an int8 file, over the calibration `ranges`."""
    import onnx
    from onnxruntime.quantization import QuantType

    from keras_unet.export.quantization import onnx_nodes_to_exclude
    from keras_unet.export.quantization.onnx_precision import int16_overrides

    prepared = prepared_model(job, options.opset)
    kept = onnx_nodes_to_exclude(prepared, list(options.keep_int16))
    graph = onnx.load(str(prepared), load_external_data=False).graph
    return int16_overrides(graph, kept, activation, QuantType.QInt16, ranges)


@contextlib.contextmanager
def opset_bump_quiet(skip: bool) -> Iterator[None]:
    """Mute the root logger's warning that `quantize_static` moves a graph to opset 21 for
    16-bit Q/DQ (it logs on the root logger, which `quiet_logs` leaves alone); nothing
    when `skip`."""
    root = logging.getLogger()
    level = root.level
    if not skip:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def depth_to_space_quantized(uint8: bool) -> Iterator[None]:
    """Quantize `DepthToSpace` (the pixel shuffle of `decoder_form`) like `Transpose`.

    onnxruntime's QDQ quantizer leaves an op float unless its registry names it, and
    `DepthToSpace` is not there, while its CPU kernel moves uint8 tensors and the session's
    graph optimizer drops the DequantizeLinear/QuantizeLinear pair around it. Registered as a
    same-scale op for the length of one `quantize_static` call, for uint8 activations only:
    with int8 ones the CPU provider then ran the convolutions before it in float.
    """
    from onnxruntime.quantization import registry
    from onnxruntime.quantization.operators.direct_q8 import QDQDirect8BitOp

    added = uint8 and "DepthToSpace" not in registry.QDQRegistry
    if added:
        registry.QDQRegistry["DepthToSpace"] = QDQDirect8BitOp
    try:
        yield
    finally:
        if added:
            registry.QDQRegistry.pop("DepthToSpace", None)


def convert(job, options):
    """The `.onnx` bytes (no metadata yet) of the job's model for `options`.

    Example:
    ```python
    model_bytes = convert(job, ONNXOptions(quantize="int8"))
    ```
    """
    path = float_model(job, options.opset)
    if options.quantize in ("int8", "int16x8"):
        return quantize_int8(job, options)
    if options.quantize == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(onnx.load(str(path)),
                                        keep_io_types=True).SerializeToString()
    return path.read_bytes()


def runtime_graph(path: Any, work: Any) -> Any:
    """The graph onnxruntime's CPU provider runs for the ONNX file `path`: after its own
    optimizations (QDQ fusion into QLinearConv, the NHWC layout of integer ops). Written
    into a temporary folder under `work` and read back.

    Example:
    ```python
    [node.op_type for node in runtime_graph("model_int8.onnx", "/tmp").node]
    ```
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=work) as folder:
        optimized = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(optimized)).graph


def float_ops_left(path: Any, work: Any) -> dict:
    """Compute-heavy ops onnxruntime's CPU provider runs in float for `path`, by type.

    Reads the graph after onnxruntime's own optimizations (`runtime_graph`), which is what
    actually runs.

    Example:
    ```python
    float_ops_left("model_int8.onnx", "/tmp")  # {'ConvTranspose': 4}
    ```
    """
    counts: dict = {}
    for node in runtime_graph(path, work).node:
        if node.op_type in HEAVY_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def describe(model_bytes: bytes) -> dict:
    """Shape and dtypes of the input and output of an ONNX model (no quantized I/O here)."""
    import onnx

    graph = onnx.load_from_string(model_bytes).graph

    def io(value):
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        return dims, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name

    input_shape, input_dtype = io(graph.input[0])
    _, output_dtype = io(graph.output[0])
    return {"input_shape": input_shape, "input_dtype": input_dtype,
            "output_dtype": output_dtype, "input_quantization": None,
            "output_quantization": None}


def time_ms(model_bytes: bytes, repeats: int = 5, threads: int = 2,
            size: Optional[tuple] = None) -> float:
    """Median milliseconds of one onnxruntime run on zeros, after a warm-up run.

    Args:
        model_bytes: the ONNX file's bytes (input `(N, H, W, C)`).
        repeats: timed runs.
        threads: onnxruntime intra-op threads.
        size: `(height, width)` to run a free-size (`--dynamic-size`) file at; a U-Net
            cannot run at the 1x1 a free dimension would otherwise get.

    Example:
    ```python
    time_ms(Path("model.onnx").read_bytes(), threads=2, size=(128, 128))
    ```
    """
    import numpy as np
    import onnxruntime as ort

    from keras_unet.runtime.timing import median_ms

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    fill = [1, *(size or (1, 1)), 1]
    shape = [d if isinstance(d, int) else fill[axis] for axis, d in enumerate(feed.shape)]
    inputs = {feed.name: np.zeros(shape, np.float32)}
    return median_ms(functools.partial(session.run, None, inputs), warmup=1, runs=repeats)


