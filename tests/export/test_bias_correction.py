"""Bias correction: a convolution's bias absorbs the mean shift of its int8 weights."""

import numpy as np
import pytest

from keras_unet.export.quantization.bias_correction import output_shift, weight_rounding_error
from keras_unet.export.quantization.variants import Variant, parse_variant, variant_words


def _conv(x, weights, groups=1):
    """NCHW 1x1 convolution, weights `(out, in / groups, 1, 1)`."""
    outputs, per_group = weights.shape[:2]
    out = []
    for o in range(outputs):
        first = (o // (outputs // groups)) * per_group
        out.append(np.einsum("nchw,c->nhw", x[:, first:first + per_group], weights[o, :, 0, 0]))
    return np.stack(out, axis=1)


def test_the_rounding_error_is_that_of_symmetric_per_channel_int8():
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1, (4, 3, 3, 3))
    weights[2] = 0.0
    error = weight_rounding_error(weights)
    scale = np.abs(weights.reshape(4, -1)).max(axis=1) / 127
    assert np.all(error[2] == 0)
    for o in (0, 1, 3):
        assert np.abs(error[o]).max() <= scale[o] / 2 + 1e-12
        np.testing.assert_allclose((weights[o] + error[o]) / scale[o],
                                   np.round((weights[o] + error[o]) / scale[o]), atol=1e-9)
    # Weights already on the grid have no error.
    assert np.abs(weight_rounding_error(weights + error)).max() < 1e-12


@pytest.mark.parametrize("groups, shape", [(1, (5, 4, 1, 1)), (4, (8, 1, 1, 1)), (2, (4, 2, 1, 1))])
def test_the_shift_is_the_mean_change_of_the_output_and_the_correction_removes_it(groups, shape):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 6, (3, 4, 5, 5))  # mostly positive inputs (after a ReLU), NCHW
    weights = rng.normal(0, 1, shape)
    quantized = weights + weight_rounding_error(weights)
    means = x.mean(axis=(0, 2, 3))
    shift = output_shift(weights, means, groups)
    float_out, int8_out = _conv(x, weights, groups), _conv(x, quantized, groups)
    np.testing.assert_allclose(shift, (int8_out - float_out).mean(axis=(0, 2, 3)), rtol=1e-5,
                               atol=1e-6)
    corrected = (int8_out - shift[None, :, None, None]).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(corrected, float_out.mean(axis=(0, 2, 3)), atol=1e-5)


def test_means_that_do_not_fit_the_kernel_give_no_shift():
    assert output_shift(np.ones((2, 3, 1, 1)), np.ones(4)) is None


def test_a_variant_names_its_calibration_and_what_was_done_to_the_weights():
    assert parse_variant("percentile+bias") == Variant("percentile", "bias")
    assert parse_variant("percentile+bias").corrected and not parse_variant("minmax+bias").rounded
    assert parse_variant("minmax+gptq").rounded
    assert parse_variant("minmax") == Variant("minmax")
    assert variant_words("entropy+gptq") == "entropy calibration, weights rounded against the calibration data (GPTQ)"


def test_onnx_convs_get_their_bias_corrected_except_the_excluded():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from keras_unet.export.quantization.bias_correction import onnx_correct_biases

    rng = np.random.default_rng(2)
    w1, b1 = rng.normal(0, 1, (4, 3, 3, 3)).astype("float32"), rng.normal(0, 1, 4).astype("float32")
    w2 = rng.normal(0, 1, (4, 1, 3, 3)).astype("float32")  # depthwise, no bias
    w3 = rng.normal(0, 1, (2, 4, 1, 1)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["a", "w2"], ["b"], name="depthwise", group=4, pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["b", "w3"], ["y"], name="kept")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3")])
    model = helper.make_model(graph)
    means = {"x": np.array([1.0, 2.0, 3.0]), "a": np.arange(4.0), "b": np.ones(4)}
    corrected = onnx_correct_biases(model, means, exclude=["kept"])
    inits = {init.name: numpy_helper.to_array(init) for init in corrected.graph.initializer}
    nodes = {node.name: node for node in corrected.graph.node}
    np.testing.assert_allclose(inits[nodes["conv1"].input[2]], b1 - output_shift(w1, means["x"]),
                               rtol=1e-6)
    np.testing.assert_allclose(inits[nodes["depthwise"].input[2]],
                               -output_shift(w2, means["a"], groups=4), rtol=1e-6)
    assert len(nodes["kept"].input) == 2  # excluded: no bias added
    assert len(model.graph.node[1].input) == 2  # the original graph is untouched
    onnx.checker.check_model(corrected)


@pytest.mark.slow
def test_tflite_convs_get_their_bias_corrected_except_the_kept(tmp_path):
    import keras
    import tensorflow as tf

    from keras_unet.export.quantization.bias_correction import tflite_correct_biases
    from keras_unet.export.quantization.tflite_graph import tensor_ops

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    float_bytes = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    _, outputs = tensor_ops(float_bytes)
    kept = outputs[0]  # the head's output: the model's
    sampler_means = _tflite_input_means(float_bytes)
    corrected = tflite_correct_biases(float_bytes, sampler_means, keep=[kept])
    before, after = _tflite_biases(float_bytes), _tflite_biases(corrected)
    assert after[kept][1] == pytest.approx(before[kept][1])
    changed = [name for name in before if name != kept]
    assert len(changed) == 2
    for name in changed:
        source, bias = before[name][0], before[name][1]
        assert np.abs(after[name][1] - bias).max() > 0  # rounding error is never exactly 0
        kernel = before[name][2]
        depthwise = kernel.shape[0] == 1  # (1, kh, kw, out); a conv's is (out, kh, kw, in)
        layout, groups = ((kernel.transpose(3, 0, 1, 2), 4) if depthwise
                          else (kernel.transpose(0, 3, 1, 2), 1))
        np.testing.assert_allclose(after[name][1], bias - output_shift(layout, sampler_means[source],
                                                                       groups), rtol=1e-5)


def _tflite_input_means(model_bytes):
    from keras_unet.export.quantization.tflite_ranges import sample_tensors

    images = np.random.default_rng(3).uniform(0, 1, (4, 1, 8, 8, 3)).astype("float32")
    return sample_tensors(model_bytes, list(images)).channel_means()


def _tflite_biases(model_bytes):
    """`{op output name: (input name, bias, kernel)}` of the file's convolutions."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    found = {}
    for op in graph.operators:
        inputs = list(op.inputs)
        if len(inputs) != 3:
            continue
        tensors = [graph.tensors[i] for i in inputs]
        arrays = [np.frombuffer(bytes(bytearray(model.buffers[t.buffer].data)), np.float32)
                  .reshape(list(t.shape)) if model.buffers[t.buffer].data is not None else None
                  for t in tensors]
        found[graph.tensors[op.outputs[0]].name.decode()] = (tensors[0].name.decode(), arrays[2],
                                                             arrays[1])
    return found
