"""Keras -> ONNX: float32, float16, or int8 QDQ static quantization for onnxruntime.

The ONNX converter on top of `keras_unet.export.pipeline`. The float32 graph comes from
`model.export(format="onnx")` (tf2onnx underneath; with Keras 3,
`tf2onnx.convert.from_keras` breaks without an explicit `input_signature`, while
`model.export` builds one), once per job and opset. The input is called `image`; batch and
spatial size are static unless `dynamic_batch` / `dynamic_size` ask otherwise.

int8 runs `onnxruntime.quantization.quant_pre_process` (graph clean-up and ONNX shape
inference) and then `quantize_static` in QDQ format with the same real calibration
images as TFLite:

- **uint8 activations, int8 per-channel weights** by default. On the project's AMD
  AVX-512-VNNI CPU this ran the seed model 1.6x faster than onnxruntime's default int8/int8:
  the u8 x s8 product maps straight onto VNNI, while s8 activations need an extra
  shift. `activation_type="int8"` is available for runtimes that want symmetric
  activations.
- **Ops left in float**: onnxruntime's CPU provider has no int8 kernel for
  `ConvTranspose`, so Q/DQ pairs around it run as dequantize -> float ConvTranspose
  -> quantize; on a MobileNetV2 U-Net the int8 file was then slower than fp32. A UNet's
  2x2 up-convolutions are therefore exported as 1x1 Conv + DepthToSpace
  (`keras_unet.export.decoder_form`), both integer here, the shuffle written as NHWC
  reshapes so onnxruntime keeps the decoder in its NHWC integer layout
  (`keras_unet.export.onnx_layout`). The export reads back the graph
  onnxruntime actually runs and reports the compute ops still in float
  (`ExportResult.float_ops_left`, e.g. another model's 3x3 ConvTranspose), with a warning.
  `ONNXOptions.nodes_to_exclude` keeps chosen nodes in float on purpose (the quantization
  repair step).
- **No symbolic shape inference.** `quant_pre_process` would run onnxruntime's
  `SymbolicShapeInference` first, which, when it cannot follow a graph, saves
  `sym_shape_infer_temp.onnx` and a uuid-named `.data` file into the process's working
  directory (avoidable only by `os.chdir`, which moves the whole process). It is skipped:
  on every UNet variant of `tests/export/test_export_matrix.py` the quantized graphs came
  out node for node the same with and without it; ONNX's own shape inference, which still
  runs, finds every shape of a static CNN.

float16 uses `onnxruntime.transformers.float16.convert_float_to_float16` with float32
input/output (`keep_io_types`): half the file size; the CPU provider computes many ops
through casts, so it is for size or for GPU providers, not CPU speed.

Example:
```python
from keras_unet.export.onnx import export_onnx

result = export_onnx("model.keras", "model_int8.onnx", quantize="int8",
                     calibration_data="data/val")
print(result.summary())
```
"""

import contextlib
import dataclasses
import io
import logging
import tempfile
from pathlib import Path

from keras_unet.export.mask_head import onnx_with_mask_head
from keras_unet.export.pipeline import Converter, Diagnosis, check_output, run_export
from keras_unet.export.verify import DEFAULT_AGREEMENT_FLOOR
from keras_unet.export.decoder_form import export_form

QUANTIZE_MODES = ("none", "fp16", "int8")
ACTIVATION_TYPES = ("uint8", "int8")
# Percentile first: it agreed better on every model of the int8 matrix.
CALIBRATE_METHODS = ("percentile", "minmax", "entropy")
INPUT_NAME = "image"
DEFAULT_OPSET = 17
# Compute-heavy op types; any of these left outside QLinear*/integer kernels in the
# graph onnxruntime runs is float work inside an "int8" model.
# An int8 file that gains less than this over float32 is reported (as for TFLite).
MIN_INT8_SPEEDUP = 1.5
HEAVY_OPS = ("Conv", "ConvTranspose", "FusedConv", "MatMul", "Gemm", "FusedMatMul", "FusedGemm")


@dataclasses.dataclass(frozen=True)
class ONNXOptions:
    """How `convert` turns the job's model into a `.onnx` file.

    Args:
        quantize: `"none"`, `"fp16"` or `"int8"`.
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
            range) or `"entropy"` (onnxruntime's).

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

    def __post_init__(self):
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset < 13:
            raise ValueError(f"`opset` must be an integer >= 13. Received: opset={self.opset!r}")
        if self.activation_type not in ACTIVATION_TYPES + ("auto",):
            raise ValueError(
                f"`activation_type` must be 'uint8', 'int8' or 'auto'. "
                f"Received: activation_type={self.activation_type!r}"
            )
        if self.calibrate_method not in CALIBRATE_METHODS:
            raise ValueError(
                f"`calibrate_method` must be one of {list(CALIBRATE_METHODS)}. "
                f"Received: calibrate_method={self.calibrate_method!r}"
            )


@contextlib.contextmanager
def _quiet_logs():
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


def float_model(job, opset):
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
            # onnxruntime has no int8 ConvTranspose), with the batch and size asked for.
            graph = job.cached("export_form", lambda: export_form(job.model))
            with _quiet_logs():
                graph.export(str(path), format="onnx", verbose=False,
                             input_signature=[spec], opset_version=opset)
        except Exception as error:  # tf2onnx raises many types; name the cause
            raise RuntimeError(
                f"ONNX conversion (tf2onnx, opset {opset}) failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from error
        return path

    return job.cached(("onnx_float", opset), build)


def prepare_for_int8(float_path, out):
    """Write the float graph at `float_path` as `quantize_static` should read it to `out`:
    `quant_pre_process` (no symbolic shape inference) and the NHWC pixel shuffle
    (`keras_unet.export.onnx_layout`: onnxruntime otherwise moves the decoder to NCHW)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from keras_unet.export.onnx_layout import nhwc_pixel_shuffle

    with _quiet_logs():
        quant_pre_process(str(float_path), str(out), skip_symbolic_shape=True)
    onnx.save(nhwc_pixel_shuffle(onnx.load(str(out))), str(out))


def _prepared_model(job, opset):
    """The float graph to quantize, once per job: after `quant_pre_process` (no symbolic
    shape inference), with each pixel shuffle in the NHWC form (`onnx_layout`)."""
    def build():
        path = job.new_path("prepared", ".onnx")
        prepare_for_int8(float_model(job, opset), path)
        return path

    return job.cached(("onnx_prepared", opset), build)


def _quantize_int8(job, options):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from keras_unet.export.calibration import onnx_calibration_reader, pin_input_range

    out = job.new_path("int8", ".onnx")
    # "percentile" is ours, not onnxruntime's (see quantization.onnx_ranges): min/max
    # calibration with each intermediate tensor's range overridden.
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.MinMax}
    extra = {}
    if options.calibrate_method == "percentile":
        extra["TensorQuantOverrides"] = _percentile_overrides(job, options.opset)
    # The Entropy calibrator prints its progress to stdout.
    uint8 = options.activation_type != "int8"
    with _quiet_logs(), contextlib.redirect_stdout(io.StringIO()), \
            _depth_to_space_quantized(uint8):
        quantize_static(
            str(_prepared_model(job, options.opset)), str(out),
            onnx_calibration_reader(pin_input_range(job.calibration), INPUT_NAME,
                                    progress=job.progress),
            quant_format=QuantFormat.QDQ,
            # "auto" without the int8 session (no verification): the usual winner.
            activation_type=QuantType.QUInt8 if uint8 else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=list(options.nodes_to_exclude),
            calibrate_method=methods[options.calibrate_method],
            extra_options=extra,
        )
    return finish_quantized(out)


def finish_quantized(path):
    """The bytes of the QDQ file at `path`, with the free-size shuffle's `Shape` nodes
    reading quantized tensors (`onnx_layout.shapes_read_quantized`; nothing to do in a
    static-size graph) and a binary model's logit range clipped to the sigmoid's [-8, 8]
    (`keras_unet.export.quantization.logit_range`)."""
    import onnx

    from keras_unet.export.onnx_layout import shapes_read_quantized
    from keras_unet.export.quantization.logit_range import onnx_clip_logit_range

    model = onnx.load(str(path))
    if not shapes_read_quantized(model):
        return onnx_clip_logit_range(Path(path).read_bytes())
    return onnx_clip_logit_range(model.SerializeToString())


@contextlib.contextmanager
def _depth_to_space_quantized(uint8):
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


def _percentile_overrides(job, opset):
    """Percentile ranges of the job's prepared graph on its calibration images, once."""
    from keras_unet.export.calibration import pin_input_range
    from keras_unet.export.quantization.onnx_ranges import percentile_overrides

    return job.cached(("onnx_percentile_ranges", opset), lambda: percentile_overrides(
        _prepared_model(job, opset), pin_input_range(job.calibration), input_name=INPUT_NAME))


def convert(job, options):
    """The `.onnx` bytes (no metadata yet) of the job's model for `options`.

    Example:
    ```python
    model_bytes = convert(job, ONNXOptions(quantize="int8"))
    ```
    """
    path = float_model(job, options.opset)
    if options.quantize == "int8":
        return _quantize_int8(job, options)
    if options.quantize == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(onnx.load(str(path)),
                                        keep_io_types=True).SerializeToString()
    return path.read_bytes()


def runtime_graph(path, work):
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


def float_ops_left(path, work):
    """Compute-heavy ops onnxruntime's CPU provider runs in float for `path`, by type.

    Reads the graph after onnxruntime's own optimizations (`runtime_graph`), which is what
    actually runs.

    Example:
    ```python
    float_ops_left("model_int8.onnx", "/tmp")  # {'ConvTranspose': 4}
    ```
    """
    counts = {}
    for node in runtime_graph(path, work).node:
        if node.op_type in HEAVY_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def describe(model_bytes):
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


def embed_metadata(model_bytes, metadata):
    """`model_bytes` with the keras_unet metadata stored in `metadata_props`."""
    import onnx

    from keras_unet.export.metadata import embed_onnx_metadata

    return embed_onnx_metadata(onnx.load_from_string(model_bytes), metadata).SerializeToString()


def diagnose(job, options, model_bytes):
    """Warn about compute ops an int8 file runs in float, about int8 that gains less than
    1.5x over float32 here, and about fp16 on CPU."""
    found, float_ops, timings = [], {}, {}
    if options.quantize == "int8":
        path = job.new_path("diagnose", ".onnx")
        path.write_bytes(model_bytes)
        float_ops = float_ops_left(path, job.work)
        if float_ops:
            found.append(
                f"onnxruntime's CPU provider runs {sum(float_ops.values())} compute op(s) of "
                f"this int8 model in float ({float_ops}), each between a dequantize and a "
                "quantize; the int8 file may be slower than float32. "
                + ("ConvTranspose has no int8 CPU kernel (a UNet's 2x2 ones are exported "
                   "as Conv + DepthToSpace; other kernel sizes are not): upsampling with "
                   "UpSampling2D gives a fully integer decoder."
                   if "ConvTranspose" in float_ops else ""))
        timings = {"float32": time_ms(float_model(job, options.opset).read_bytes(),
                                      threads=options.threads, size=job.size),
                   "int8": time_ms(model_bytes, threads=options.threads, size=job.size)}
        speedup = timings["float32"] / timings["int8"] if timings["int8"] > 0 else float("inf")
        if speedup < MIN_INT8_SPEEDUP and timings["float32"] > 1.0:
            found.append(
                f"This int8 file ran only {speedup:.2f}x faster than float32 ONNX here "
                f"({timings['int8']:.1f} vs {timings['float32']:.1f} ms per image, "
                f"{options.threads} thread(s)): ops left in float and the dequantize/quantize "
                "pairs around them cost what int8 saves. Measure on the target device with "
                "`keras-unet bench` before choosing it.")
    if options.quantize == "fp16":
        found.append("float16 ONNX halves the file size, but onnxruntime's CPU provider "
                     "computes many float16 ops through casts: expect it to be slower than "
                     "float32 on CPU. Use it for GPU providers or size.")
    return Diagnosis(warnings=found, float_ops_left=float_ops, timings_ms=timings)


def time_ms(model_bytes, repeats=5, threads=2, size=None):
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
    import time

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    fill = [1, *(size or (1, 1)), 1]
    shape = [d if isinstance(d, int) else fill[axis] for axis, d in enumerate(feed.shape)]
    inputs = {feed.name: np.zeros(shape, np.float32)}
    session.run(None, inputs)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, inputs)
        runs.append(time.perf_counter() - start)
    return float(np.median(runs)) * 1e3


class Int8Session:
    """The int8 quantizer of one job for `keras_unet.export.int8.quantize_verified`.

    Each calibration method is a variant (our Percentile ranges first, then MinMax and
    onnxruntime's Entropy); ops are kept in float through `nodes_to_exclude`, each with the
    activation onnxruntime would fuse it with (`onnx_nodes_to_exclude`).

    Example:
    ```python
    session = Int8Session(job, ONNXOptions(quantize="int8"))
    model_bytes = session.quantize([], "minmax")
    ```
    """

    def __init__(self, job, options):
        self.job = job
        self.metadata = {}
        if options.activation_type == "auto":
            options = self._fastest_activation_type(options)
        self.options = options
        first = options.calibrate_method
        self.variants = (first,) + tuple(m for m in CALIBRATE_METHODS if m != first)

    def _fastest_activation_type(self, options):
        """Quantize with uint8 and with int8 activations, keep the faster on this machine.

        Only the candidates with the fewest compute ops left in float compete on time: a
        few timed runs on a busy machine once picked int8 activations, with which
        onnxruntime 1.32 runs the 1x1 convolutions before DepthToSpace in float.
        """
        timings, float_ops = {}, {}
        for kind in ACTIVATION_TYPES:
            candidate = dataclasses.replace(options, activation_type=kind)
            model_bytes = self.job.cached(("onnx_int8", kind, options.calibrate_method, ()),
                                          lambda: _quantize_int8(self.job, candidate))
            path = self.job.new_path(f"activations_{kind}", ".onnx")
            path.write_bytes(model_bytes)
            float_ops[kind] = sum(float_ops_left(path, self.job.work).values())
            timings[kind] = time_ms(model_bytes, threads=options.threads, size=self.job.size)
        fewest = min(float_ops.values())
        chosen = min((kind for kind in timings if float_ops[kind] == fewest), key=timings.get)
        self.metadata = {
            "activation_type": chosen,
            "activation_type_ms": {kind: round(ms, 3) for kind, ms in timings.items()},
            "activation_type_float_ops": float_ops}
        return dataclasses.replace(options, activation_type=chosen)

    def time_ms(self, model_bytes):
        """Latency of `model_bytes` here (onnxruntime, the export's threads)."""
        return time_ms(model_bytes, threads=self.options.threads, size=self.job.size)

    def _options(self, keep_float, variant):
        from keras_unet.export.quantization import onnx_nodes_to_exclude

        prepared = _prepared_model(self.job, self.options.opset)
        exclude = tuple(onnx_nodes_to_exclude(prepared, list(keep_float))) if keep_float else ()
        return dataclasses.replace(self.options, calibrate_method=variant,
                                   nodes_to_exclude=tuple(self.options.nodes_to_exclude) + exclude)

    def _graph(self):
        import onnx

        return self.job.cached(("onnx_prepared_graph", self.options.opset), lambda: onnx.load(
            str(_prepared_model(self.job, self.options.opset)), load_external_data=False).graph)

    def expand(self, nodes):
        """The graph nodes among `nodes` (not graph inputs) and the nodes reading their
        outputs: a float op still hands its consumer a tensor quantized at its range."""
        graph = self._graph()
        by_output = {out: node.name for node in graph.node for out in node.output}
        names = {node.name for node in graph.node}
        kept = [node for node in nodes if node in names]
        readers = [node.name for node in graph.node
                   if any(by_output.get(name) in kept for name in node.input)]
        return list(dict.fromkeys(kept + readers))

    def leading_nodes(self):
        """The stem's nodes (`report.leading_nodes`); nodes that read only weights (a
        kernel's Transpose) are not activations and are left out."""
        from keras_unet.export.quantization import leading_nodes

        graph = self._graph()
        weights = {init.name for init in graph.initializer}
        ops = [(node.name, node.op_type, list(node.input), list(node.output)) for node in graph.node
               if any(name and name not in weights for name in node.input)]
        return leading_nodes(ops, HEAVY_OPS)

    def quantize(self, keep_float, variant):
        key = ("onnx_int8", self.options.activation_type, variant, tuple(keep_float))
        return self.job.cached(key,
                               lambda: _quantize_int8(self.job, self._options(keep_float, variant)))

    def report(self, images, keep_float, variant):
        from keras_unet.export.quantization import onnx_layer_report

        quantized = self.job.new_path("report", ".onnx")
        quantized.write_bytes(self.quantize(keep_float, variant))
        batch = 1 if self.job.batch else 8
        return onnx_layer_report(_prepared_model(self.job, self.options.opset), quantized, images,
                                 input_name=INPUT_NAME, keep_float=keep_float,
                                 model=self.job.model, batch_size=batch)


CONVERTER = Converter(format="onnx", suffix=".onnx", quantize_modes=QUANTIZE_MODES,
                      convert=convert, describe=describe, embed_metadata=embed_metadata,
                      diagnose=diagnose, int8_session=Int8Session,
                      mask_head=onnx_with_mask_head)


def export_onnx(model_or_path, out, quantize="none", opset=DEFAULT_OPSET, dynamic_batch=False,
                dynamic_size=False, calibration_data=None, calibration_size=100,
                input_size=None, io_dtype=None, activation_type="auto", verify=True,
                agreement_floor=DEFAULT_AGREEMENT_FLOOR, verification_data=None,
                verification_size=32, progress=True, repair=None, layer_report=False,
                threads=2, verbose=False, output="probabilities"):
    """Convert a Keras segmentation model to a verified `.onnx` file.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        out: the `.onnx` file to write (replaced only once the new file verified).
        quantize: `"none"` (float32), `"fp16"` (float16 weights and compute, float32
            I/O) or `"int8"` (QDQ static quantization; needs calibration images).
        opset: ONNX opset (13 or newer; QDQ per-channel needs 13).
        dynamic_batch: leave the batch dimension free (default: batch 1).
        dynamic_size: leave height and width free (default: static).
        calibration_data: real images for `"int8"`: a folder, a list of image paths or
            an array `(N, H, W, C)` in [0, 255].
        calibration_size: at most this many calibration images.
        input_size: `(height, width)`; required for a model that accepts any size
            unless `dynamic_size`. Also the size verification runs at.
        io_dtype: only `"float32"` (or None): ONNX QDQ models keep float I/O.
        activation_type: `"auto"` (default: quantize both, keep the faster here),
            `"uint8"` or `"int8"` activations.
        verify: run the file against the Keras model and raise `VerificationError` when
            it does not match (float32: max_abs_diff <= 1e-4; quantized: agreement_iou
            >= `agreement_floor`).
        agreement_floor: lowest mask `agreement_iou` accepted for a quantized file.
        verification_data: images to verify on. Default for int8: at least 32 images held
            out from `calibration_data` and not calibrated on (`keras_unet.export.holdout`);
            otherwise the nuclei sample shipped with keras_unet.
        verification_size: at most this many verification images (default 32); images
            held out from `calibration_data` are all used (at least 32, and those beyond
            `calibration_size`, up to half the set).
        progress: show progress bars.
        repair: int8: when the file misses `agreement_floor`, keep its worst layers in
            float until it meets it (default on for int8, trying Percentile and Entropy
            calibration too; `False` for pure int8 or a refusal). See `keras_unet.export.int8`.
        layer_report: int8: also build the per-layer report (`result.layer_report`) when
            the file passes at once.
        threads: threads for the speed checks during export.
        verbose: also show TensorFlow's, the converter's and the runtimes' own log lines
            (silenced by default, for the duration of the call only).
        output: `"probabilities"` (default) or `"mask"`: the file outputs a `(N, H, W)`
            uint8 class-id mask (threshold or arg-max inside), so a device does no
            post-processing; checked against the probability file's masks.

    Returns:
        `keras_unet.export.result.ExportResult`.

    Example:
    ```python
    import keras_unet
    from keras_unet.export.onnx import export_onnx

    model = keras_unet.UNet((64, 64, 3), filters=8, depth=3)
    result = export_onnx(model, "unet.onnx", dynamic_batch=True)
    result.input_shape  # (None, 64, 64, 3)
    ```
    """
    if quantize == "dynamic":
        raise ValueError(
            "quantize='dynamic' is not supported for ONNX: use 'int8' (static QDQ, "
            "fastest on onnxruntime) or 'fp16', or export dynamic-range to TFLite. "
            "Received: quantize='dynamic'"
        )
    if io_dtype not in (None, "float32"):
        raise ValueError(
            "ONNX exports keep float32 input and output (QDQ quantizes inside the graph). "
            f"Received: io_dtype={io_dtype!r}"
        )
    check_output(CONVERTER, out, quantize)
    options = ONNXOptions(quantize=quantize, opset=opset, activation_type=activation_type,
                          threads=threads)
    return run_export(
        CONVERTER, options, model_or_path, out, calibration_data=calibration_data,
        calibration_size=calibration_size, input_size=input_size, dynamic_size=dynamic_size,
        batch=None if dynamic_batch else 1, verify=verify, agreement_floor=agreement_floor,
        verification_data=verification_data, verification_size=verification_size,
        progress=progress, repair=repair, layer_report=layer_report, verbose=verbose,
        output=output,
    )
