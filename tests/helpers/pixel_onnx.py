"""Tiny per-pixel ONNX models built with `onnx.helper` (no TensorFlow), for benchmark tests."""

import numpy as np
import pytest


def pixel_model(path, size, weights, bias, activation):
    """`activation(images @ weights + bias)` per pixel, NHWC in and out, batch free.

    Args:
        path: where to save the `.onnx` file.
        size: the square input size.
        weights: `(3, K)` float array: K output channels from RGB.
        bias: K floats.
        activation: `"Sigmoid"` or `"Softmax"` (over the last axis).

    Example:
    ```python
    pixel_model(tmp_path / "m.onnx", 32, np.full((3, 1), 1 / 30), [-12.8], "Sigmoid")
    ```
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.asarray(weights, np.float32)
    attributes = {"axis": -1} if activation == "Softmax" else {}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["images", "weights"], ["weighted"]),
         helper.make_node("Add", ["weighted", "bias"], ["logits"]),
         helper.make_node(activation, ["logits"], ["probabilities"], **attributes)],
        "pixel_model",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["batch", size, size, weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "weights"),
                     numpy_helper.from_array(np.asarray(bias, np.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)
