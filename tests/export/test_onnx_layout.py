"""The NHWC pixel shuffle of int8 ONNX graphs: the same numbers as `DepthToSpace`."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from keras_unet.export.onnx_layout import nhwc_pixel_shuffle  # noqa: E402


def _depth_to_space_model(shape, blocksize=2, mode="DCR", batch=1):
    """x -> Conv 1x1 (identity-free: random weights) -> DepthToSpace -> Relu."""
    channels, height, width = shape
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, (channels, channels, 1, 1),
                                rng.normal(size=(channels, channels, 1, 1)).astype("float32").ravel())
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=blocksize, mode=mode,
                              name="up/DepthToSpace"),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    out_shape = (batch, channels // blocksize ** 2, height * blocksize, width * blocksize)
    graph = helper.make_graph(
        nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (batch, *shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("blocksize", [2, 3])
def test_the_rewrite_computes_exactly_what_depth_to_space_computes(mode, blocksize):
    shape = (4 * blocksize ** 2, 5, 7)  # height != width, so a swapped axis shows
    model = _depth_to_space_model(shape, blocksize, mode)
    rewritten = nhwc_pixel_shuffle(model)
    onnx.checker.check_model(rewritten, full_check=True)
    types = [node.op_type for node in rewritten.graph.node]
    assert "DepthToSpace" not in types
    assert types == ["Conv", "Transpose", "Reshape", "Transpose", "Reshape", "Transpose", "Relu"]
    assert [node.op_type for node in model.graph.node] == ["Conv", "DepthToSpace", "Relu"]
    x = np.random.default_rng(1).normal(size=(1, *shape)).astype("float32")
    np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))


def _free(model, dims, name):
    free = onnx.ModelProto()
    free.CopyFrom(model)
    for value in (*free.graph.input, *free.graph.output):
        for dim in dims:
            value.type.tensor_type.shape.dim[dim].dim_param = f"{name}{dim}"
    return free


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_a_free_height_and_width_compute_the_merged_shape(mode):
    # A --dynamic-size export: the file runs at any size, so must the shuffle.
    free = _free(_depth_to_space_model((16, 5, 7), mode=mode), (2, 3), "size")
    rewritten = nhwc_pixel_shuffle(free)
    onnx.checker.check_model(rewritten, full_check=True)
    assert "DepthToSpace" not in [node.op_type for node in rewritten.graph.node]
    for height, width in ((5, 7), (4, 9)):
        x = np.random.default_rng(height).normal(size=(1, 16, height, width)).astype("float32")
        out = _run(rewritten, x)
        assert out.shape == (1, 4, 2 * height, 2 * width)
        np.testing.assert_array_equal(out, _run(free, x))


def test_a_depth_to_space_of_unknown_depth_is_left_as_it_is():
    # Channels unknown: nothing to split them by.
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, name="up")
    graph = helper.make_graph(
        [node], "free", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, "c", 5, 7))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, "c4", 10, 14))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert [n.op_type for n in nhwc_pixel_shuffle(model).graph.node] == ["DepthToSpace"]


def test_a_free_batch_keeps_working():
    model = _depth_to_space_model((16, 5, 7), batch=3)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    rewritten = nhwc_pixel_shuffle(model)
    assert "DepthToSpace" not in [node.op_type for node in rewritten.graph.node]
    x = np.random.default_rng(2).normal(size=(3, 16, 5, 7)).astype("float32")
    np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))
