"""Int8 `.tflite` files with chosen ops at 16-bit activations, by the LiteRT quantizer.

TF's MLIR quantizer (what writes today's int8 files) has one activation type per file, and
its older quantizer writes 16 bits everywhere or nowhere. The LiteRT quantizer
(`litert-quantizer`, formerly ai-edge-quantizer) takes a recipe per op: `static_wi8_ai8`
for every op, then a `static_wi8_ai16` rule (8-bit weights, 16-bit activations) for each op
named in `keep_int16`, and `no_quantize` for each op in `keep_float`; it writes the
QUANTIZE ops (int8 <-> int16, int8 <-> float) between ops of different types.

It quantizes the calibrated model `TFLiteQuantizer` keeps, from the ranges that model
records, so the ranges measured again and the percentile variant apply as for int8 files.
The names are the same: a recipe rule matches an op by its "scope", its output tensor names
joined with ";" plus a trailing ";", and `keep_int16` holds the calibrated model's op output
names (the `node` of a report row), so each rule is `^<escaped node>;$`.

It serves only files with ops kept at int16. The int8 files without any stay with the MLIR
quantizer, byte for byte as before: the two quantizers differ in details (e.g. the
LiteRT one has no DEPTH_TO_SPACE, written as RESHAPE/TRANSPOSE/RESHAPE here first,
`tflite_depth_to_space`), and replacing one with the other would change every int8 file.

Why: see docs/notes/2026-12-06-tflite-int16x8.md; for the repairs of the written file
(`scalar_duplicates_restored`, `general_int16_additions`), docs/notes/2026-12-08-trim-and-int16-writer.md.

Example:
```python
from keras_unet.export.quantization.tflite_mixed import quantize_mixed

model_bytes = quantize_mixed(calibrated, keep_int16=["m/stem/Relu"], io_dtype="uint8")
```
"""

import contextlib
import re

import numpy as np


# The recipe scope of the input/output rules: matches everything, a key of its own.
IO_SCOPE = "^.*$"


def recorded_qsvs(model_bytes) -> dict:
    """`{tensor name: {"min", "max"}}` of the ranges a calibrated model records, in the
    form the LiteRT quantizer takes as its calibration result."""
    from keras_unet.export.quantization.tflite_ranges import recorded_ranges

    return {name: {"min": np.array(lo, np.float32), "max": np.array(hi, np.float32)}
            for name, (lo, hi) in recorded_ranges(model_bytes).items()}


def scope_regex(node: str) -> str:
    """The recipe regex that matches exactly the op whose output tensor is `node`."""
    return "^" + re.escape(node) + ";$"


def configure(engine, keep_int16=(), keep_float=(), io_dtype="uint8") -> None:
    """Give the LiteRT `Quantizer` its recipe: int8 everywhere, `keep_int16` ops at 16-bit
    activations, `keep_float` ops not quantized, the model's input and output as `io_dtype`."""
    from litert_quantizer import algorithm_manager, qtyping, recipe

    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    ops = qtyping.TFLOperationName
    for node in keep_int16:
        engine.add_static_config(scope_regex(node), ops.ALL_SUPPORTED, activation_num_bits=16,
                                 weight_num_bits=8)
    for node in keep_float:
        engine.update_quantization_recipe(scope_regex(node), ops.ALL_SUPPORTED,
                                          algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    # Last, under a scope of their own: the rule that matches last wins, and the virtual
    # OUTPUT op's scope is the last op's output name, which a node rule above also matches.
    for op in (ops.INPUT, ops.OUTPUT):
        if io_dtype == "float32":
            engine.update_quantization_recipe(
                IO_SCOPE, op, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        else:  # uint8: the policy's static_wi8_au8, which it allows for INPUT and OUTPUT only
            engine.update_quantization_recipe(IO_SCOPE, op, qtyping.OpQuantizationConfig(
                activation_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=8, symmetric=False, dtype=qtyping.TensorDataType(
                        "UINT" if io_dtype == "uint8" else "INT")),
                weight_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=8, symmetric=True,
                    granularity=qtyping.QuantGranularity.CHANNELWISE),
                compute_precision=qtyping.ComputePrecision.INTEGER))


def quantize_mixed(calibrated_model, keep_int16=(), keep_float=(), io_dtype="uint8") -> bytes:
    """An int8 `.tflite` file with the ops of `keep_int16` at 16-bit activations.

    Args:
        calibrated_model: a calibrated float model (`TFLiteQuantizer.calibrated_for`).
        keep_int16: op output tensor names (report rows' `node`) at 16-bit activations.
        keep_float: op output tensor names left in float.
        io_dtype: `"uint8"`, `"int8"` or `"float32"` input and output.

    Example:
    ```python
    quantize_mixed(quantizer.calibrated_for("percentile"), keep_int16=[node])
    ```
    """
    try:
        from litert_quantizer import quantizer
    except ImportError as error:
        raise ImportError("An int8 TFLite file with ops at 16-bit activations (keep_int16) is "
                          "written by the LiteRT quantizer: pip install litert-quantizer "
                          "(in keras-unet-edge[cpu]).") from error

    from keras_unet.export.quantization.tflite_depth_to_space import depth_to_space_as_transpose

    model = depth_to_space_as_transpose(calibrated_model)
    engine = quantizer.Quantizer(bytearray(model))
    configure(engine, keep_int16, keep_float, io_dtype)
    with _no_progress_bars():
        result = engine.quantize(recorded_qsvs(model), enable_progress_bar=False,
                                 enable_progress_report=False)
    # The three repairs of the written file in one parse and one pack of the model.
    return _edited(inline_buffers(bytes(result.quantized_model)), _restore_scalar_duplicates,
                   _take_general_int16_additions, _bridge_uint8_io_through_int8)


def general_int16_additions(model_bytes) -> bytes:
    """`model_bytes` with each int16 ADD and SUB on TFLite's general rescaling path.

    Their options default to `pot_scale_int16`, which sends an op whose three scales are all
    near powers of two to a kernel written for LSTM cells, where no input may have a coarser
    scale than the output. MobileNetV3's input rescaling kept at int16 has such scales (the
    image at 2/32767, the -1 and the output at 1/32767), and the runtime refused the file
    ("data->input1_shift <= 0 was not true ... ADD failed to prepare"). TF's own 16x8
    converter writes these ops with the flag off. A file without such an op comes back
    unchanged.
    """
    return _edited(model_bytes, _take_general_int16_additions)


def _take_general_int16_additions(model) -> bool:
    """`general_int16_additions`'s edit of a `ModelT`; True when it changed an op."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.export.quantization.tflite_graph import builtin_codes

    arithmetic = {schema.BuiltinOperator.ADD, schema.BuiltinOperator.SUB}
    codes, changed = builtin_codes(model), False
    for graph in model.subgraphs:
        for op in graph.operators:
            options = op.builtinOptions
            if (codes[op.opcodeIndex] in arithmetic and options is not None
                    and getattr(options, "potScaleInt16", False)
                    and graph.tensors[op.outputs[0]].type == schema.TensorType.INT16):
                options.potScaleInt16 = False
                changed = True
    return changed


def scalar_duplicates_restored(model_bytes) -> bytes:
    """`model_bytes` with each duplicated scalar constant given its source's shape back.

    When two ops read one constant at different precisions (a hard-sigmoid's 1/6 read by an
    int8 MUL and by one kept at int16), the quantizer gives each its own copy,
    `<name>_duplicated_<index>`. litert-quantizer 0.11 gives a copy of a scalar (a tensor
    with no shape) the shape of its float buffer's bytes, [4], so the int16 copy declares
    four values over a buffer of one, and the runtime refuses the whole file ("Tensor 274 is
    invalidly specified in schema"). Squeeze-and-excite blocks have such scalars, so
    MobileNetV3 files with a block kept at int16 were refused. A file without such a copy
    comes back unchanged.
    """
    return _edited(model_bytes, _restore_scalar_duplicates)


def _restore_scalar_duplicates(model) -> bool:
    """`scalar_duplicates_restored`'s edit of a `ModelT`; True when it changed a tensor."""
    changed = False
    for graph in model.subgraphs:
        by_name = {tensor.name: tensor for tensor in graph.tensors}
        for tensor in graph.tensors:
            source = by_name.get(re.sub(rb"_duplicated_\d+$", b"", tensor.name or b""))
            if source is None or source is tensor:
                continue
            if _dims(source.shape) == 0 and _dims(tensor.shape) != 0:
                tensor.shape = source.shape
                changed = True
    return changed


def _edited(model_bytes, *edits) -> bytes:
    """`model_bytes` after each of `edits` on its object form (`ModelT`), parsed and packed
    once; the same bytes when every edit returns False (none changed anything)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    changed = [edit(model) for edit in edits]  # every edit runs, whatever the others did
    if not any(changed):
        return model_bytes
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _dims(shape) -> int:
    """Number of dimensions of a schema tensor's `shape` (None or empty: a scalar)."""
    return 0 if shape is None else len(shape)


def uint8_io_through_int8(model_bytes) -> bytes:
    """`model_bytes` with each QUANTIZE between uint8 and int16 made two, through int8.

    With an op next to the model's input or output kept at int16 (the head, for an
    integer-only file), the quantizer converts the uint8 input or output straight from or to
    int16, which TFLite's QUANTIZE kernel refuses ("output->type == kTfLiteInt8 ||
    kTfLiteInt16 || kTfLiteInt32 was not true"). It converts int16 <-> int8 and int8 <-> uint8,
    so the op goes through an int8 tensor at the uint8 tensor's scale (zero point - 128): the
    same values, one more requantization of 8-bit codes that maps each exactly. A file
    without such an op comes back unchanged.
    """
    return _edited(model_bytes, _bridge_uint8_io_through_int8)


def _bridge_uint8_io_through_int8(model) -> bool:
    """`uint8_io_through_int8`'s edit of a `ModelT` (one subgraph only); True when it added
    an op."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.export.quantization.tflite_graph import builtin_codes

    if len(model.subgraphs) != 1:
        return False
    pair = {schema.TensorType.UINT8, schema.TensorType.INT16}
    graph, codes = model.subgraphs[0], builtin_codes(model)
    operators, changed = [], False
    for op in graph.operators:
        operators.append(op)
        if codes[op.opcodeIndex] != schema.BuiltinOperator.QUANTIZE:
            continue
        source, target = op.inputs[0], op.outputs[0]
        if {graph.tensors[source].type, graph.tensors[target].type} != pair:
            continue
        uint8 = source if graph.tensors[source].type == schema.TensorType.UINT8 else target
        middle = _int8_twin(graph, schema, graph.tensors[uint8])
        second = schema.OperatorT()
        second.opcodeIndex, second.inputs, second.outputs = op.opcodeIndex, [middle], [target]
        op.outputs = [middle]
        operators.append(second)
        changed = True
    graph.operators = operators
    return changed


def _int8_twin(graph, schema, tensor) -> int:
    """A new int8 tensor holding the values of uint8 `tensor` (scale kept, zero point - 128)."""
    quant = schema.QuantizationParametersT()
    quant.scale = list(tensor.quantization.scale)
    quant.zeroPoint = [int(z) - 128 for z in tensor.quantization.zeroPoint]
    twin = schema.TensorT()
    twin.name = tensor.name + b"/int8"
    twin.type, twin.shape = schema.TensorType.INT8, list(tensor.shape)
    twin.shapeSignature = list(tensor.shapeSignature) if tensor.shapeSignature is not None else None
    twin.buffer, twin.quantization = 0, quant
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


@contextlib.contextmanager
def _no_progress_bars():
    """Keeps the quantizer's own tqdm bars off stderr. litert-quantizer 0.11 does not pass
    `enable_progress_bar` on to its model modifier (`Quantizer._get_quantized_model`), which
    then draws "Applying Transformations to tensors" for any model of 100 tensors or more,
    once per repair attempt."""
    from litert_quantizer.utils import progress_utils

    class Quiet(progress_utils.ProgressBar):
        def __init__(self, *args, **kwargs):
            kwargs["enable"] = False
            super().__init__(*args, **kwargs)

    original = progress_utils.ProgressBar
    progress_utils.ProgressBar = Quiet
    try:
        yield
    finally:
        progress_utils.ProgressBar = original


def inline_buffers(model_bytes) -> bytes:
    """`model_bytes` with every constant stored inside the flatbuffer.

    Above 256 KB of constants the LiteRT quantizer appends them after the flatbuffer and
    points to them by offset (the large-model layout). The runtime reads that, but every
    rewrite that goes through TF's `flatbuffer_utils` object API (ours do) keeps the offsets
    and drops the appended bytes, which leaves a file the runtime refuses ("Constant buffer
    ... out of range offset").
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    moved = False
    for buffer in model.buffers:
        if buffer.offset and buffer.offset > 1 and buffer.size:
            buffer.data = np.frombuffer(model_bytes, np.uint8, count=buffer.size,
                                        offset=buffer.offset).copy()
            buffer.offset, buffer.size = 0, 0
            moved = True
    if not moved:
        return bytes(model_bytes)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
