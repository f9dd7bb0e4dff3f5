"""The decoder's export form: the same float numbers, integer kernels in the files."""

import numpy as np
import pytest

SIZE = (32, 32)


def _unet(**kwargs):
    import keras

    import keras_unet

    keras.utils.set_random_seed(0)
    return keras_unet.UNet((*SIZE, 3), filters=4, depth=2, **kwargs)


def _images(count=2):
    return np.random.default_rng(1).uniform(0, 255, (count, *SIZE, 3)).astype("float32")


def _nuclei(start, count):
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.calibration import load_images

    return load_images(nuclei_path(), SIZE, 3, limit=start + count, progress=False)[start:]


@pytest.mark.parametrize("kwargs", [{}, {"use_batchnorm": True, "use_attention": True},
                                    {"upsample": "bilinear"}])
@pytest.mark.parametrize("separate", [False, True])
def test_the_export_form_computes_what_the_model_computes(kwargs, separate):
    from keras_unet.export.decoder_form import export_decoder_block_type, export_form

    model = _unet(**kwargs)
    # Weights that are not the initializer's, so a wrong kernel layout shows.
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    before = [w.copy() for w in model.get_weights()]
    form = export_form(model, separate_skip_scales=separate)
    changed = kwargs.get("upsample", "transpose") == "transpose" or separate
    assert (form is not model) == changed
    kinds = {type(layer).__name__ for layer in form.layers}
    assert ("ExportDecoderBlock" in kinds) == changed
    assert "ExportDecoderBlock" not in {type(layer).__name__ for layer in model.layers}
    images = _images()
    np.testing.assert_allclose(np.asarray(form(images)), np.asarray(model(images)), atol=1e-5)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    if changed:
        block = next(layer for layer in form.layers if isinstance(layer, export_decoder_block_type()))
        assert block.subpixel == (kwargs.get("upsample", "transpose") == "transpose")


def test_a_wrong_export_form_is_caught_before_conversion(monkeypatch):
    from keras import ops

    from keras_unet.export.decoder_form import export_decoder_block_type
    from keras_unet.export.source import static_model

    ExportDecoderBlock = export_decoder_block_type()
    # Taps in the wrong order: the shape is right, the numbers are not.
    original = ExportDecoderBlock._upsample
    monkeypatch.setattr(ExportDecoderBlock, "_upsample",
                        lambda self, below: ops.flip(original(self, below), axis=1))
    with pytest.raises(RuntimeError, match="export form of the model differs"):
        static_model(_unet(), SIZE)


@pytest.mark.slow
def test_int8_tflite_has_no_transposed_convolution_and_encoders_keep_their_own_scale(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from keras_unet.export import export_tflite

    model = _unet()
    out = tmp_path / "model.tflite"
    export_tflite(model, out, quantize="int8", calibration_data=_nuclei(0, 8),
                  verification_data=_nuclei(8, 4),
                  agreement_floor=0.0, repair=False, progress=False, check_speed=False)
    interpreter = Interpreter(str(out))
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    assert "TRANSPOSE_CONV" not in names
    assert names.count("DEPTH_TO_SPACE") == 2 and names.count("DEPTHWISE_CONV_2D") == 2
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    # Each encoder block ends in a ReLU: its output, which the max pool reads, gets the whole
    # int8 range from 0 (zero point -128), not a scale shared with the signed upsampled tensor.
    pooled = [tensors[op["inputs"][0]] for op in ops if op["op_name"] == "MAX_POOL_2D"]
    assert len(pooled) == 2
    assert [int(t["quantization_parameters"]["zero_points"][0]) for t in pooled] == [-128, -128]


@pytest.mark.slow
def test_int8_onnx_runs_every_convolution_in_integer_and_the_decoder_in_nhwc(tmp_path, monkeypatch):
    import onnx

    from keras_unet.export import export_onnx
    from keras_unet.export.onnx import float_ops_left, runtime_graph

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "model.onnx"
    result = export_onnx(_unet(), out, quantize="int8", calibration_data=_nuclei(0, 8),
                         verification_data=_nuclei(8, 4), agreement_floor=0.0, repair=False,
                         progress=False, activation_type="uint8")
    graph = onnx.load(str(out)).graph
    types = [node.op_type for node in graph.node]
    # Each 2x2 up-convolution: a 1x1 Conv and the pixel shuffle as NHWC reshapes.
    assert "ConvTranspose" not in types and "DepthToSpace" not in types
    shuffles = [node for node in graph.node if node.name.endswith("/shuffle")]
    assert len(shuffles) == 2
    assert float_ops_left(out, tmp_path) == {} and result.float_ops_left == {}
    # The shuffle is quantized: a QuantizeLinear/DequantizeLinear pair on each side of it.
    producers = {output: node.op_type for node in graph.node for output in node.output}
    for node in shuffles:
        assert producers[node.input[0]] == "DequantizeLinear"
    # What onnxruntime runs: no DepthToSpace, and the decoder's concatenations on the
    # channel axis of NHWC, not moved back to NCHW around a DepthToSpace.
    ran = runtime_graph(out, tmp_path).node
    assert "DepthToSpace" not in [node.op_type for node in ran]
    concat_axes = [next(a.i for a in node.attribute if a.name == "axis")
                   for node in ran if node.op_type == "QLinearConcat"]
    assert concat_axes in ([3, 3], [-1, -1])


@pytest.mark.slow
def test_a_free_size_int8_onnx_shuffles_in_nhwc_and_runs_at_any_size(tmp_path, monkeypatch):
    import keras
    import onnxruntime as ort

    import keras_unet
    from keras_unet.export import decoder_form, export_onnx, onnx_layout
    from keras_unet.export.onnx import runtime_graph

    monkeypatch.chdir(tmp_path)
    # The layout alone, without the equalized joins' depthwise convolutions: with them, the
    # comparison file (DepthToSpace left in NCHW, never written by the exporter) once gave a
    # channels-first output in a CI run; four runs here did not repeat it.
    monkeypatch.setattr(decoder_form, "skip_equalization", lambda *args, **kwargs: {})
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((None, None, 3), filters=4, depth=2)

    def export(out):
        return export_onnx(model, out, quantize="int8", calibration_data=_nuclei(0, 8),
                           verification_data=_nuclei(8, 4), dynamic_size=True, input_size=SIZE,
                           agreement_floor=0.0, repair=False, progress=False,
                           activation_type="uint8")

    export(tmp_path / "nhwc.onnx")
    ran = [node.op_type for node in runtime_graph(tmp_path / "nhwc.onnx", tmp_path).node]
    # The merged shape is computed from the quantized tensor: no dequantize runs but the
    # output's, and no DepthToSpace.
    assert "DepthToSpace" not in ran and ran.count("DequantizeLinear") == 1
    assert ran.count("Shape") == 2
    # The same file with DepthToSpace left as it was computes the same numbers.
    monkeypatch.setattr(onnx_layout, "nhwc_pixel_shuffle", lambda graph: graph)
    export(tmp_path / "nchw.onnx")
    sessions = [ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
                for name in ("nhwc.onnx", "nchw.onnx")]
    for height, width in (SIZE, (48, 64)):
        images = np.random.default_rng(height).uniform(0, 255, (1, height, width, 3)).astype("float32")
        new, old = (session.run(None, {"image": images})[0] for session in sessions)
        assert new.shape == (1, height, width, 1)
        np.testing.assert_array_equal(new, old)


def test_a_mixed_precision_model_keeps_its_compute_dtype():
    import keras

    from keras_unet.export.source import static_model

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _unet()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    fixed = static_model(model, SIZE, separate_skip_scales=True)  # checks it against the model
    images = _images(1)
    np.testing.assert_allclose(np.asarray(fixed(images), "float32"),
                               np.asarray(model(images), "float32"), atol=1e-2)


def _caffe_model(mode="caffe"):
    import keras

    from keras_unet.layers import InputNormalization

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SIZE, 3))
    x = InputNormalization(mode, name="normalization")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))


@pytest.mark.parametrize("mode", ["caffe", "symmetric", "unit"])
def test_normalisation_as_a_convolution_gives_the_same_float32_numbers(mode):
    from keras_unet.export.decoder_form import conv_normalization_type, export_form

    model = _caffe_model(mode)
    assert export_form(model) is model  # only asked for (ONNX)
    form = export_form(model, normalization_as_conv=True)
    assert (form is not model) == (mode != "unit")  # x / 255 quantizes as it is
    if mode != "unit":
        assert isinstance(form.get_layer("normalization"), conv_normalization_type())
    # Every integer pixel value in every channel, and random ones.
    pixels = np.stack([np.arange(256.0)] * 3, -1).reshape(1, 16, 16, 3).astype("float32")
    pixels = np.concatenate([np.tile(pixels, (1, 2, 2, 1)), _images(1)])
    converted = np.asarray(form.get_layer("normalization")(pixels))
    original = np.asarray(model.get_layer("normalization")(pixels))
    if mode == "symmetric":  # x * (1 / 127.5) against x / 127.5: one float32 rounding apart
        np.testing.assert_allclose(converted, original, rtol=0, atol=2.5e-7)
        np.testing.assert_allclose(np.asarray(form(pixels)), np.asarray(model(pixels)), atol=1e-6)
        return
    np.testing.assert_array_equal(converted, original)
    np.testing.assert_array_equal(np.asarray(form(pixels)), np.asarray(model(pixels)))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["caffe", "symmetric"])
def test_an_integer_only_onnx_of_a_normalising_model_has_no_float_op(tmp_path, mode):
    """tf2onnx writes caffe normalisation as Sub, Transpose, ReverseSequence, Reshape, and
    symmetric normalisation (MobileNetV2's) as Mul and Sub, which onnxruntime's quantizer
    leaves in float in part; the export's 1x1 convolution is quantized."""
    import onnx

    from keras_unet.export.onnx import export_onnx
    from keras_unet.export.onnx_integer import float_ops

    path = tmp_path / "normalising.onnx"
    result = export_onnx(_caffe_model(mode), path, quantize="int8", integer_only=True,
                         calibration_data=_nuclei(0, 16), verification_data=_nuclei(16, 8),
                         progress=False)
    model_bytes = path.read_bytes()
    assert result.integer_only and float_ops(model_bytes) == []
    ops = [node.op_type for node in onnx.load_from_string(model_bytes).graph.node]
    assert not {"Sub", "ReverseSequence"} & set(ops) and ops.count("Conv") == 3


def test_equalizing_factors_bring_each_channel_toward_the_largest_within_the_cap():
    from keras_unet.export.decoder_form import equalizing_factors

    up, skip = equalizing_factors([4.0, 1.0], [0.5, 0.0, 2.0, 0.25, 0.01], True, cap=8.0)
    np.testing.assert_allclose(up, [1.0, 2.0], rtol=1e-6)
    # sqrt(4 / 0.5); a channel that is always 0 keeps 1; sqrt(4 / 0.01) = 20 is capped at 8.
    np.testing.assert_allclose(skip, [np.sqrt(8.0), 1.0, np.sqrt(2.0), 4.0, 8.0], rtol=1e-6)
    up, skip = equalizing_factors([4.0, 1.0], [1.0], False, cap=8.0)
    assert up is None
    np.testing.assert_allclose(skip, [2.0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, upsampled_scaled", [
    ({}, True), ({"upsample": "bilinear"}, False),
    ({"use_batchnorm": True, "use_attention": True}, False), ({"residual": True}, None)])
def test_equalized_joins_compute_what_the_model_computes(kwargs, upsampled_scaled):
    from keras_unet.export.decoder_form import EQUALIZATION_CAP, export_form, skip_equalization

    model = _unet(**kwargs)
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    before = [w.copy() for w in model.get_weights()]
    images = _images(4)
    scales = skip_equalization(model, images)
    if upsampled_scaled is None:  # the residual shortcut reads the join too: no factors
        assert scales == {}
        return
    assert sorted(scales) == ["decoder_block_0", "decoder_block_1"]
    for up, skip in scales.values():
        assert (up is not None) == upsampled_scaled
        for factors in (skip,) if up is None else (up, skip):
            assert np.all(factors >= 1.0) and np.all(factors <= EQUALIZATION_CAP)
    assert any(np.any(skip > 1.0) for _, skip in scales.values())
    form = export_form(model, separate_skip_scales=True, join_scales=scales)
    expected = np.asarray(model(images))
    np.testing.assert_allclose(np.asarray(form(images)), expected, atol=1e-5)
    for old, new in zip(before, model.get_weights()):  # the copies took the factors
        np.testing.assert_array_equal(old, new)


def _faint_skip_unet(faint):
    """A UNet whose first skip connection is `faint` times fainter than before, computing the
    same float numbers: the encoder's last kernel scaled down, what reads it scaled up."""
    model = _unet()
    encoder = model.get_layer("encoder_block_0").conv2
    encoder.kernel.assign(np.asarray(encoder.kernel) / faint)
    encoder.bias.assign(np.asarray(encoder.bias) / faint)
    stage = model.get_layer("encoder_stage_1").block.conv1   # reads the pooled output
    stage.kernel.assign(np.asarray(stage.kernel) * faint)
    decoder = model.get_layer("decoder_block_0").block.conv1
    kernel = np.asarray(decoder.kernel).copy()
    kernel[:, :, kernel.shape[2] // 2:, :] *= faint  # the join is [upsampled, skip]
    decoder.kernel.assign(kernel)
    return model


def _join_skip_error(path, model, images):
    """Relative error of the skip channels in the TFLite file's last join (decoder_block_0),
    against the Keras skip, the file's equalizing factors divided out."""
    import keras
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(  # the builtin kernels: XNNPack would hide the join's tensor
        str(path), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    producers = {out: op for op in ops for out in op["outputs"]}
    join = [op for op in ops if op["op_name"] == "CONCATENATION"][-1]
    scaler = producers[join["inputs"][1]]
    assert scaler["op_name"] == "DEPTHWISE_CONV_2D"
    weights = tensors[scaler["inputs"][1]]
    factors = (interpreter.get_tensor(weights["index"]).reshape(-1).astype("float64")
               * weights["quantization_parameters"]["scales"])

    def dequantized(index):
        tensor = tensors[index]
        scale, zero = tensor["quantization"]
        return (interpreter.get_tensor(index).astype("float64") - zero) * scale

    skip_model = keras.Model(model.inputs, model.get_layer("encoder_block_0").output)
    errors, magnitudes = [], []
    entry = interpreter.get_input_details()[0]
    for image in images:
        interpreter.set_tensor(entry["index"], np.round(image[None]).astype(entry["dtype"]))
        interpreter.invoke()
        joined = dequantized(join["outputs"][0])[0]
        skip = joined[..., -len(factors):] / factors
        expected = np.asarray(skip_model(image[None]))[0]
        errors.append(np.abs(skip - expected).mean())
        magnitudes.append(np.abs(expected).mean())
    return float(np.sum(errors) / np.sum(magnitudes))


@pytest.mark.slow
def test_an_equalized_int8_tflite_keeps_the_levels_of_a_faint_skip_connection(tmp_path, monkeypatch):
    """A skip 16x fainter than the upsampled tensor beside it keeps about 1/16 of the int8
    levels of the join's shared scale; equalized (its channels scaled up by about
    sqrt(16) = 4), it keeps about 4x more."""
    from keras_unet.export import decoder_form, export_tflite

    model = _faint_skip_unet(16.0)
    images = _nuclei(8, 4)

    def skip_error(equalize):
        if not equalize:
            monkeypatch.setattr(decoder_form, "skip_equalization", lambda *a, **k: {})
        out = tmp_path / f"{equalize}.tflite"
        export_tflite(model, out, quantize="int8", calibration_data=_nuclei(0, 8),
                      verification_data=images, agreement_floor=0.0, repair=False,
                      progress=False, check_speed=False)
        monkeypatch.undo()
        return _join_skip_error(out, model, images)

    equalized, plain = skip_error(True), skip_error(False)
    assert equalized < plain / 2, (equalized, plain)
