"""Weight rounding against the data (GPTQ): int8 weights chosen for the layer's output, written
on the grid the quantizers use, so the file holds exactly the steps chosen."""

import numpy as np
import pytest

from keras_unet.export.quantization.weight_rounding import (ConvGeometry, InputMoments,
                                                            gptq_round, nearest_round)


def _im2col(x, kernel, strides, dilations, pads):
    """Every patch of an NHWC tensor, `(positions, kh * kw * C)`, the slow obvious way."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    top, left, bottom, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    rows = range(0, padded.shape[1] - (kh - 1) * dh, sh)
    cols = range(0, padded.shape[2] - (kw - 1) * dw, sw)
    return np.array([[padded[n, y + i * dh, x_ + j * dw, :] for i in range(kh) for j in range(kw)]
                     for n in range(len(x)) for y in rows for x_ in cols]).reshape(-1, kh * kw * x.shape[-1])


@pytest.mark.parametrize("geometry, pads", [
    (ConvGeometry("x", (3, 3), pads="same"), (1, 1, 1, 1)),
    (ConvGeometry("x", (3, 3), strides=(2, 2), pads="same"), (0, 0, 1, 1)),  # TF: the odd pad last
    (ConvGeometry("x", (3, 3), dilations=(2, 2), pads=(2, 2, 2, 2)), (2, 2, 2, 2)),
    (ConvGeometry("x", (1, 1)), (0, 0, 0, 0)),
])
def test_input_moments_are_the_second_moment_of_every_patch(geometry, pads):
    x = np.random.default_rng(0).normal(size=(3, 8, 10, 4)).astype("float32")
    moments = InputMoments(geometry, expected_images=1, samples=10**6)  # every position
    moments.add(x)
    patches = _im2col(x, geometry.kernel, geometry.strides, geometry.dilations, pads).astype("float64")
    assert moments.count == len(patches)
    np.testing.assert_allclose(moments.matrix()[0], patches.T @ patches / len(patches), rtol=1e-5, atol=1e-6)


def test_channels_first_inputs_and_groups_give_one_moment_per_group():
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype("float32")
    moments = InputMoments(ConvGeometry("x", (3, 3), pads="same", groups=2, channels_first=True),
                           expected_images=1, samples=10**6)
    moments.add(x.transpose(0, 3, 1, 2))
    patches = _im2col(x, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)).reshape(-1, 9, 4)
    for group in range(2):
        p = patches[:, :, 2 * group:2 * group + 2].reshape(len(patches), -1).astype("float64")
        np.testing.assert_allclose(moments.matrix()[group], p.T @ p / len(p), rtol=1e-5, atol=1e-6)


def _correlated_layer(seed=2, outputs=16):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(12, 10, 10, 8)), axis=-1).astype("float32") + 1.0
    moments = InputMoments(ConvGeometry("x", (3, 3), pads="same"), expected_images=12)
    for image in x:
        moments.add(image[None])
    patches = _im2col(x, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    return rng.normal(0, 0.1, (outputs, 3, 3, 8)), moments.matrix(), patches


def test_gptq_rounding_lowers_the_output_error_and_keeps_the_int8_grid():
    kernel, matrix, patches = _correlated_layer()
    rounded = gptq_round(kernel, matrix)

    def output_error(weights):
        return np.mean((patches @ (weights - kernel).reshape(len(kernel), -1).T) ** 2)

    assert output_error(rounded) < 0.5 * output_error(nearest_round(kernel))
    flat, original = rounded.reshape(len(kernel), -1).astype("float64"), kernel.reshape(len(kernel), -1)
    scale = np.abs(original).max(axis=1) / 127
    # Each channel's largest weight keeps its step, so a quantizer derives the same scale...
    np.testing.assert_allclose(np.abs(flat).max(axis=1), np.abs(original).max(axis=1), rtol=1e-6)
    # ...and every weight lies on a step of it, within [-127, 127].
    steps = flat / scale[:, None]
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.abs(np.round(steps)).max() <= 127
    # Not nearest rounding in disguise: some weights moved a step away from their nearest.
    assert np.any(np.round(steps) != np.round(original / scale[:, None]))


def test_moments_that_do_not_fit_the_kernel_are_refused():
    kernel, matrix, _ = _correlated_layer()
    with pytest.raises(ValueError, match="moments"):
        gptq_round(kernel, matrix, groups=2)


def _onnx_model():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype("float32"), rng.normal(0, 0.1, 8).astype("float32")
    w2 = rng.normal(0, 0.3, (8, 1, 3, 3)).astype("float32")  # depthwise
    w3 = rng.normal(0, 0.3, (2, 8, 1, 1)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["image"], ["x"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["ar"]),
         helper.make_node("Conv", ["ar", "w2"], ["b"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["b", "w3"], ["y"], name="kept")],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.slow
def test_onnx_convs_are_rounded_and_onnxruntime_keeps_the_steps_chosen(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    from keras_unet.export.quantization.weight_rounding import onnx_input_moments, onnx_round_weights

    model = _onnx_model()
    images = np.random.default_rng(4).uniform(0, 255, (6, 8, 8, 3)).astype("float32")
    moments = onnx_input_moments(model, images, "image")
    assert set(moments) == {"conv1", "depthwise", "kept"}
    assert moments["depthwise"].shape == (8, 9, 9)
    rounded = onnx_round_weights(model, moments, exclude=["kept"])
    onnx.checker.check_model(rounded)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in rounded.graph.initializer}
    np.testing.assert_array_equal(after["w3"], before["w3"])  # excluded
    assert not np.array_equal(after["w1"], before["w1"]) and not np.array_equal(after["w2"], before["w2"])
    np.testing.assert_array_equal(before["w1"], numpy_helper.to_array(model.graph.initializer[0]))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": image[None]} for image in images])

        def get_next(self):
            return next(self.items, None)

    source, out = tmp_path / "rounded.onnx", tmp_path / "int8.onnx"
    onnx.save(rounded, str(source))
    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    weight_type=QuantType.QInt8, per_channel=True)
    quantized = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    for name in ("w1", "w2"):
        steps, scale = quantized[f"{name}_quantized"], quantized[f"{name}_scale"]
        np.testing.assert_allclose(steps * scale.reshape(-1, 1, 1, 1), after[name], rtol=1e-5, atol=1e-7)


def _tflite_kernels(model_bytes):
    """`{op output name: kernel as stored}` of a `.tflite` file's convolutions: float, or int8
    steps times their per-channel scale."""
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_unet.export.quantization.tflite_graph import builtin_codes

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph, codes = model.subgraphs[0], builtin_codes(model)
    kernels = {}
    for op in graph.operators:
        if codes[op.opcodeIndex] not in (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D):
            continue
        tensor = graph.tensors[op.inputs[1]]
        raw = bytes(bytearray(model.buffers[tensor.buffer].data))
        if tensor.type == schema.TensorType.INT8:
            axis = tensor.quantization.quantizedDimension
            scale = np.asarray(tensor.quantization.scale).reshape([-1 if i == axis else 1 for i in range(4)])
            kernel = np.frombuffer(raw, np.int8).reshape(list(tensor.shape)) * scale
        else:
            kernel = np.frombuffer(raw, np.float32).reshape(list(tensor.shape))
        kernels[graph.tensors[op.outputs[0]].name.decode()] = kernel
    return kernels


@pytest.mark.slow
def test_tflite_convs_are_rounded_and_the_int8_file_holds_the_steps_chosen():
    import keras
    import tensorflow as tf

    from keras_unet.export.quantization import TFLiteQuantizer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="depthwise")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    images = np.random.default_rng(5).uniform(0, 255, (8, 1, 8, 8, 3)).astype("float32")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    quantizer = TFLiteQuantizer(converter)

    plain = _tflite_kernels(quantizer.calibrated_for("minmax"))
    rounded = _tflite_kernels(quantizer.calibrated_for("minmax+gptq"))
    assert len(rounded) == 3 and set(rounded) == set(plain)
    assert all(not np.array_equal(rounded[name], plain[name]) for name in rounded)
    # Quantizing can lengthen an op's name: the convolutions are matched in graph order.
    stored = list(_tflite_kernels(quantizer.quantize([], "minmax+gptq")).values())
    assert len(stored) == 3
    for kernel, expected in zip(stored, rounded.values()):  # rounded to themselves by TFLite
        np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-7)
    # An op kept in float keeps its weights as they were.
    head = list(plain)[-1]
    kept = _tflite_kernels(quantizer.calibrated_for("minmax+gptq", keep_float=[head]))
    np.testing.assert_array_equal(kept[head], plain[head])


def test_a_memo_rounds_each_kernel_once_and_changes_nothing(monkeypatch):
    from keras_unet.export.quantization import weight_rounding
    from keras_unet.export.quantization.weight_rounding import onnx_input_moments, onnx_round_weights

    model = _onnx_model()
    images = np.random.default_rng(4).uniform(0, 255, (6, 8, 8, 3)).astype("float32")
    moments = onnx_input_moments(model, images, "image")
    plain = {exclude: onnx_round_weights(model, moments, exclude=exclude)
             for exclude in ((), ("kept",), ("conv1", "kept"))}
    solves = []
    real = weight_rounding.gptq_round
    monkeypatch.setattr(weight_rounding, "gptq_round",
                        lambda *args: solves.append(1) or real(*args))
    memo: dict = {}
    for exclude, expected in plain.items():  # as repair does: other ops kept each time
        rounded = onnx_round_weights(model, moments, exclude=exclude, memo=memo)
        assert rounded.SerializeToString() == expected.SerializeToString()
    assert len(solves) == 3  # conv1, depthwise, kept: once each
    # A kernel that changed (another calibration's bias pass, say) is rounded anew.
    from onnx import numpy_helper

    halved = numpy_helper.to_array(model.graph.initializer[0]) * 0.5
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(halved, "w1"))
    onnx_round_weights(model, moments, memo=memo)
    assert len(solves) == 4
