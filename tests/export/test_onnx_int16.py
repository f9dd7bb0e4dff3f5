"""ONNX with 16-bit activations: whole-model int16x8, int8 files with some nodes at int16
(`keep_int16`), and what a file leaves in float (`float_ops`) or an NPU would not take
(`npu_fallbacks`).

The conversions (marked `slow`) quantize the session's tiny trained UNet through
`ONNXSession` on one job, so int8 and int16x8 are compared on the same calibration and the
same held-out images. Graph-level checks build small QDQ graphs by hand and convert nothing.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from keras_unet.export.onnx import ONNXOptions, conversion_options  # noqa: E402
from keras_unet.export.onnx_integer import float_ops, npu_fallbacks  # noqa: E402
from keras_unet.export.onnx_int8 import ONNXSession  # noqa: E402
from keras_unet.export.options import ExportOptions  # noqa: E402

THRESHOLD = 0.5


# Graphs built by hand ----------------------------------------------------------------------
def _qdq_conv_graph(head="Sigmoid", head_quantized=True, extra_op=None):
    """image -> Q -> DQ -> Conv (int8 weights) -> Q -> DQ -> head [-> Q -> DQ] -> output."""
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "w_q")
    inits = [
        weight,
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int16), "z16"),
        numpy_helper.from_array(np.array([0.01, 0.02], np.float32), "w_s"),
        numpy_helper.from_array(np.array([0, 0], np.int8), "w_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "s", "z16"], ["image_q"], name="image_Q"),
        helper.make_node("DequantizeLinear", ["image_q", "s", "z16"], ["image_dq"], name="image_DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w_DQ", axis=0),
        helper.make_node("Conv", ["image_dq", "w"], ["conv"], name="conv"),
        helper.make_node("QuantizeLinear", ["conv", "s", "z16"], ["conv_q"], name="conv_Q"),
        helper.make_node("DequantizeLinear", ["conv_q", "s", "z16"], ["conv_dq"], name="conv_DQ"),
        helper.make_node(head, ["conv_dq"], ["head"], name="head"),
    ]
    last = "head"
    if extra_op:
        nodes += [helper.make_node("QuantizeLinear", ["head", "s", "z16"], ["head_q"], name="head_Q"),
                  helper.make_node("DequantizeLinear", ["head_q", "s", "z16"], ["head_dq"],
                                   name="head_DQ"),
                  helper.make_node(extra_op, ["head_dq"], ["extra"], name="extra")]
        last = "extra"
    if head_quantized:
        nodes += [helper.make_node("QuantizeLinear", [last, "s", "z16"], ["out_q"], name="out_Q"),
                  helper.make_node("DequantizeLinear", ["out_q", "s", "z16"], ["probabilities"],
                                   name="out_DQ")]
    else:
        nodes.append(helper.make_node("Identity", [last], ["probabilities"], name="out"))
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString()


def test_float_ops_is_empty_when_every_op_sits_between_dequantize_and_quantize():
    model_bytes = _qdq_conv_graph()
    assert float_ops(model_bytes) == []
    assert npu_fallbacks(model_bytes) == []
    # The file is valid and runs: the checks read a real graph.
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.ones((1, 3, 4, 4), np.float32)})[0].shape == (1, 2, 4, 4)


def test_float_ops_names_an_op_that_writes_a_float_tensor():
    assert float_ops(_qdq_conv_graph(head_quantized=False)) == ["Sigmoid head"]
    # The float op reads a dequantized tensor: its input side alone does not make it integer.
    assert npu_fallbacks(_qdq_conv_graph(head_quantized=False)) == ["Sigmoid head"]


def test_npu_fallbacks_add_ops_the_qnn_provider_has_no_builder_for():
    # Erf sits between Q/DQ pairs (not a float op) but QNN has no builder for it.
    model_bytes = _qdq_conv_graph(extra_op="Erf")
    assert float_ops(model_bytes) == []
    assert npu_fallbacks(model_bytes) == ["Erf extra"]


def test_int16_overrides_convert_at_the_edges_of_the_kept_nodes():
    from onnxruntime.quantization import QuantType

    from keras_unet.export.quantization.onnx_precision import int16_overrides

    # a -> A -> b -> B -> c -> C -> d, and b also read by D -> e; B kept at int16.
    nodes = [helper.make_node("Relu", ["a"], ["b"], name="A"),
             helper.make_node("Relu", ["b"], ["c"], name="B"),
             helper.make_node("Relu", ["c"], ["d"], name="C"),
             helper.make_node("Relu", ["b"], ["e"], name="D")]
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "bc"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "de"],
                              value_info=values)
    ranges = {"b": [{"rmin": 0.0, "rmax": 2.0}]}
    overrides = int16_overrides(graph, ["B"], QuantType.QUInt8, QuantType.QInt16, ranges)
    assert overrides["b"] == [{"rmin": 0.0, "rmax": 2.0, "quant_type": QuantType.QUInt8,
                               "convert": {"quant_type": QuantType.QInt16, "recv_nodes": {"B"},
                                           "rmin": 0.0, "rmax": 2.0}}]
    assert overrides["c"] == [{"quant_type": QuantType.QInt16,
                               "convert": {"quant_type": QuantType.QUInt8, "recv_nodes": {"C"}}}]
    assert set(overrides) == {"b", "c"}
    assert ranges == {"b": [{"rmin": 0.0, "rmax": 2.0}]}  # the calibration's dict is untouched
    with pytest.raises(ValueError, match="keep_int16"):
        int16_overrides(graph, ["nope"], QuantType.QUInt8, QuantType.QInt16, {})


def test_options_map_int16x8_and_integer_only():
    options = conversion_options(ExportOptions(quantize="int16x8", integer_only=True))
    assert (options.quantize, options.integer_only) == ("int16x8", True)
    assert conversion_options(ExportOptions(quantize="int8")).integer_only is False
    with pytest.raises(ValueError, match="activation_type='uint8'"):
        conversion_options(ExportOptions(quantize="int16x8", activation_type="uint8"))
    with pytest.raises(ValueError, match="nodes_to_exclude"):
        ONNXOptions(quantize="int8", integer_only=True, nodes_to_exclude=("conv",))
    # The session of an integer-only export keeps nothing in float; it says so before any work.
    session = ONNXSession(None, ONNXOptions(quantize="int16x8", integer_only=True))
    assert session.metadata == {"activation_type": "int16"}
    with pytest.raises(ValueError, match="keeps no op in float"):
        session.convert(["conv"], "minmax")


def test_ops_are_kept_at_int16_only_in_files_with_uint8_activations():
    # onnxruntime 1.32 cannot load some opset-21 files with int8 activations (a float Slice
    # reading a dequantized tensor), and int16 ops need opset 21.
    assert ONNXSession(None, ONNXOptions(quantize="int8", activation_type="uint8")).can_keep_int16
    signed = ONNXSession(None, ONNXOptions(quantize="int8", activation_type="int8"))
    assert not signed.can_keep_int16
    with pytest.raises(ValueError, match="uint8 activations only"):
        signed.convert([], "minmax", ("conv",))


# Conversions of the tiny trained UNet -------------------------------------------------------
def _zero_point_type(graph, name, inits):
    return TensorProto.DataType.Name(inits[name].data_type)


def _conv_activation_types(model_bytes):
    """For each Conv: (type of the activation it reads, type its output is quantized to)."""
    graph = onnx.load_from_string(model_bytes).graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    types = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        dequantize = producers[node.input[0]]
        quantize = readers[node.output[0]][0]
        assert (dequantize.op_type, quantize.op_type) == ("DequantizeLinear", "QuantizeLinear")
        weight = producers[node.input[1]]
        assert _zero_point_type(graph, weight.input[2], inits) == "INT8", node.name
        types[node.name] = (_zero_point_type(graph, dequantize.input[2], inits),
                            _zero_point_type(graph, quantize.input[2], inits))
    return types


def _probabilities(model_bytes, images):
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": image[None]})[0] for image in images])


def _agreement(probabilities, reference):
    ours, theirs = probabilities >= THRESHOLD, reference >= THRESHOLD
    assert theirs.any()
    return (ours & theirs).sum() / (ours | theirs).sum()


@pytest.fixture(scope="module")
def files(model, held_out):
    """int8 (uint8 activations), int16x8 and int8 with the first two Conv at int16, on one
    job (min/max ranges), with the first Conv kept float in another int8 file."""
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.job import open_job
    from keras_unet.export.onnx import diagnose
    from keras_unet.export.onnx_convert import prepared_model
    from keras_unet.export.rewrites import ONNX_REWRITES

    options = ExportOptions(quantize="int8", calibration_data=nuclei_path(), calibration_size=32,
                            verification_data=held_out, progress=False)
    with open_job(model, options) as job:
        int8 = ONNXSession(job, ONNXOptions(quantize="int8", activation_type="uint8"), ONNX_REWRITES)
        int16 = ONNXSession(job, ONNXOptions(quantize="int16x8"), ONNX_REWRITES)
        convs = [node.name for node in onnx.load(str(prepared_model(job, 17))).graph.node
                 if node.op_type == "Conv"]
        yield {"convs": convs,
               "int8": int8.quantize([], "minmax"),
               "int16x8": int16.quantize([], "minmax"),
               "int16x8_ignores_keep_int16": int16.quantize([], "minmax", convs[:1]),
               "keep_int16": int8.quantize([], "minmax", convs[:2]),
               "keep_float": int8.quantize(convs[:1], "minmax"),
               "diagnosis": diagnose(job, ONNXOptions(quantize="int16x8", integer_only=True),
                                     int16.quantize([], "minmax"))}


@pytest.mark.slow
def test_int16x8_has_int16_activations_everywhere_and_agrees_better_than_int8(model, held_out,
                                                                               files):
    graph = onnx.load_from_string(files["int16x8"]).graph
    inits = {init.name: init for init in graph.initializer}
    activations = {_zero_point_type(graph, node.input[2], inits)
                   for node in graph.node if node.op_type == "QuantizeLinear"}
    assert activations == {"INT16"}
    assert set(_conv_activation_types(files["int16x8"]).values()) == {("INT16", "INT16")}
    assert files["int16x8_ignores_keep_int16"] == files["int16x8"]
    assert float_ops(files["int16x8"]) == []
    reference = model.predict(held_out, verbose=0)
    wide, narrow = (_probabilities(files[name], held_out) for name in ("int16x8", "int8"))
    assert _agreement(wide, reference) > _agreement(narrow, reference)
    assert _agreement(wide, reference) >= 0.98
    assert np.abs(wide - reference).mean() < np.abs(narrow - reference).mean()


@pytest.mark.slow
def test_the_cpu_provider_runs_int16x8_convolutions_in_float_and_the_export_says_so(files):
    # onnxruntime's CPU provider has no int16 Conv kernel: DequantizeLinear -> float Conv ->
    # QuantizeLinear, every convolution of the file.
    diagnosis = files["diagnosis"]
    assert diagnosis.float_ops_left == {"Conv": len(files["convs"])}
    assert set(diagnosis.timings_ms) == {"float32", "int16x8"}
    assert any("no int16 kernel" in warning for warning in diagnosis.warnings)


@pytest.mark.slow
def test_keep_int16_puts_exactly_those_convs_at_int16(model, held_out, files):
    types = _conv_activation_types(files["keep_int16"])
    kept = files["convs"][:2]
    assert {name: types[name] for name in kept} == {name: ("INT16", "INT16") for name in kept}
    assert {types[name] for name in types if name not in kept} == {("UINT8", "UINT8")}
    assert float_ops(files["keep_int16"]) == []
    reference = model.predict(held_out, verbose=0)
    assert _agreement(_probabilities(files["keep_int16"], held_out), reference) >= 0.95


@pytest.mark.slow
def test_float_ops_of_the_unet_files(files):
    assert float_ops(files["int8"]) == []
    assert npu_fallbacks(files["int8"]) == []
    first = files["convs"][0]
    left = float_ops(files["keep_float"])
    assert f"Conv {first}" in left and any(op.startswith("Relu ") for op in left)


@pytest.mark.slow
def test_the_runtime_runs_an_int16x8_file_as_onnxruntime_does(held_out, files, tmp_path):
    from keras_unet.runtime.onnx import ONNXRunner

    path = tmp_path / "int16x8.onnx"
    path.write_bytes(files["int16x8"])
    with ONNXRunner(path, threads=1) as runner:
        assert runner.input_dtype == np.float32
        raw = runner.run(held_out[:4])
    np.testing.assert_array_equal(raw, _probabilities(files["int16x8"], held_out[:4]))


# Through the export pipeline ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["int16x8", "int8"])
def test_an_integer_only_export_has_no_float_op_and_records_it(model, held_out, tmp_path, quantize):
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.onnx import export_onnx
    from keras_unet.runtime import load_runner

    path = tmp_path / f"{quantize}.onnx"
    extra = {"activation_type": "uint8"} if quantize == "int8" else {}
    result = export_onnx(model, path, quantize=quantize, integer_only=True,
                         calibration_data=nuclei_path(), calibration_size=32,
                         verification_data=held_out, progress=False, **extra)
    model_bytes = path.read_bytes()
    assert result.quantization == quantize and result.integer_only
    assert float_ops(model_bytes) == [] and result.npu_fallbacks == []
    assert result.kept_float == []  # repair may keep ops at int16, never in float
    # QDQ keeps float I/O: the Q after the input and the DQ before the output convert it.
    assert (result.input_dtype, result.output_dtype) == ("float32", "float32")
    assert result.verification.agreement_iou >= (0.98 if quantize == "int16x8" else 0.95)
    graph = onnx.load_from_string(model_bytes).graph
    inits = {init.name: init for init in graph.initializer}
    activations = {_zero_point_type(graph, node.input[2], inits)
                   for node in graph.node if node.op_type == "QuantizeLinear"}
    if quantize == "int16x8":
        assert activations == {"INT16"}
        assert result.metadata["int8"]["activation_type"] == "int16"
    else:
        assert "UINT8" in activations
    with load_runner(path) as runner:
        assert runner.metadata["quantization"] == quantize
        assert runner.predict(held_out[:2]).shape[:3] == (2, 32, 32)
