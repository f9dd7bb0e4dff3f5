"""keras_unet.export.qat: full-int8 TFLite and QDQ ONNX from a fine-tuned QAT model.

One tiny UNet (32x32, batch norm and attention, so folding and the gate's sigmoid and
product are exported too) is trained for a few seconds on the shipped nuclei images; its
QAT copy tracks its activation ranges over the training images (`track_ranges`, the
quantizers' training-mode path; fine-tuning itself is tested in tests/quantization). The
files must run every op in int8, hold exactly the int8 weights of the QAT model, use its
ranges, and segment like the QAT Keras model: mask agreement >= 0.99 on the 270 held-out
images (measured 0.9945 TFLite, 0.9956 ONNX; integer kernels round differently from the
float simulation by at most one step per op, and this 4-filter model is sensitive to it:
after two epochs of fine-tuning the same check measured 0.990-0.993).
"""

import numpy as np
import pytest

SIZE = (32, 32)
AGREEMENT_FLOOR = 0.99


@pytest.fixture(scope="module")
def trained():
    """`(float model, QAT model with tracked ranges, held-out images)`."""
    import keras

    import keras_unet
    from keras_unet.datasets import nuclei_path
    from keras_unet.quantization import quantize_aware, track_ranges
    from keras_unet.runtime import imageio

    images, masks = imageio.load_dataset_arrays(nuclei_path(), size=SIZE, channels=3)
    images, masks = images.astype("float32"), masks[..., None].astype("float32")
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((*SIZE, 3), filters=4, depth=2, use_batchnorm=True, use_attention=True)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(images[:64], masks[:64], batch_size=16, epochs=30, verbose=0)
    qat = track_ranges(quantize_aware(model), images[:64])
    return model, qat, images[64:]


def _tflite_probabilities(model_bytes, images):
    from keras_unet.runtime.tflite import interpreter_class

    interpreter = interpreter_class()(model_content=model_bytes)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = out["quantization"]
    outputs = []
    for image in images:
        interpreter.set_tensor(inp["index"], np.round(image)[None].astype(inp["dtype"]))
        interpreter.invoke()
        outputs.append((interpreter.get_tensor(out["index"]).astype("float32") - zero_point) * scale)
    return np.concatenate(outputs)


def _agreement(probabilities, reference):
    from keras_unet.runtime.scores import mask_agreement

    masks, expected = probabilities[..., 0] >= 0.5, reference[..., 0] >= 0.5
    assert expected.any(), "the reference masks are empty: the agreement would measure nothing"
    return mask_agreement(masks.astype(int), expected.astype(int), 1)["agreement_iou"]


@pytest.mark.slow
def test_qat_tflite_is_full_int8_with_the_trained_weights_and_segments_like_keras(trained):
    from keras_unet.export.qat import qat_tflite_bytes, tflite_float_ops
    from keras_unet.quantization.layers import QUANTIZE_AWARE_LAYERS
    from keras_unet.runtime.tflite import interpreter_class

    _, qat, images = trained
    model_bytes = qat_tflite_bytes(qat)
    assert tflite_float_ops(model_bytes) == []
    interpreter = interpreter_class()(model_content=model_bytes)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (1.0, 0)  # raw pixels
    # Every per-channel int8 kernel in the file is one of the QAT kernels, value for value.
    kernels = [np.asarray(layer.quantized_kernel()) for layer in qat.layers
               if isinstance(layer, tuple(QUANTIZE_AWARE_LAYERS.values()))]
    for tensor in interpreter.get_tensor_details():
        scales = tensor["quantization_parameters"]["scales"]
        if len(scales) < 2 or tensor["dtype"] != np.int8 or tensor["name"].endswith("requantize_weights"):
            continue  # (the identity weights of a precise requantization are no QAT kernel)
        axis = tensor["quantization_parameters"]["quantized_dimension"]
        shape = [1] * len(tensor["shape"])
        shape[axis] = -1
        values = interpreter.get_tensor(tensor["index"]) * scales.reshape(shape)
        assert any(np.allclose(np.sort(values, axis=None), np.sort(kernel, axis=None), atol=1e-7)
                   for kernel in kernels if kernel.size == values.size), tensor["name"]
    reference = qat.predict(images, verbose=0)
    assert _agreement(_tflite_probabilities(model_bytes, images), reference) >= AGREEMENT_FLOOR


def _builtin_run(model_bytes, image):
    """The interpreter after one image on TFLite's built-in kernels (no XNNPack), every
    intermediate tensor kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.round(image)[None].astype(inp["dtype"]))
    interpreter.invoke()
    return interpreter


@pytest.mark.slow
def test_requantizations_the_builtin_kernels_round_twice_are_computed_exactly(trained):
    """The tiny model's attention gate reads the upsampled tensor at 0.42 of its scale:
    the converter writes an int8 -> int8 QUANTIZE, which TFLite's built-in kernel rounds
    twice. The written file computes it as a 1x1 depthwise convolution instead."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.export.qat import converted_qat_tflite, qat_tflite_bytes
    from keras_unet.export.quantization.requantize import _imprecise_requantizations

    _, qat, images = trained
    converted, written = converted_qat_tflite(qat), qat_tflite_bytes(qat)

    def graph(model_bytes):
        model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
        codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
        return model.subgraphs[0], codes

    before, codes = graph(converted)
    found = _imprecise_requantizations(before, schema, codes)
    assert found, "the fixture no longer has a requantization below half the scale"
    after, after_codes = graph(written)
    assert _imprecise_requantizations(after, schema, after_codes) == []

    def misrounded(model_bytes, op_index):
        interpreter = _builtin_run(model_bytes, images[0])
        source, target = (interpreter._get_tensor_details(t, 0) for t in
                          (*before.operators[op_index].inputs[:1], *before.operators[op_index].outputs))
        (in_scale, in_zero), (out_scale, out_zero) = source["quantization"], target["quantization"]
        values = (interpreter.get_tensor(source["index"]).astype(np.float64) - in_zero) * in_scale
        exact = np.clip(np.floor(values / out_scale + 0.5) + out_zero, -128, 127)
        return int((interpreter.get_tensor(target["index"]) != exact).sum())

    for op_index in found:  # the same tensors in both files: only the op between them changed
        assert misrounded(converted, op_index) > 0
        assert misrounded(written, op_index) == 0


@pytest.mark.slow
def test_qat_onnx_uses_the_learned_ranges_and_segments_like_keras(trained, tmp_path):
    import onnx
    from onnx import numpy_helper

    from keras_unet.export.qat import activation_quant_params, qat_onnx_bytes
    from keras_unet.quantization import ActivationQuantizer
    from keras_unet.runtime import load_runner

    _, qat, images = trained
    path = tmp_path / "qat_int8.onnx"
    path.write_bytes(qat_onnx_bytes(qat))  # raises if a tensor took a calibrated range
    proto = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    used = {(float(constants[node.input[1]]), int(constants[node.input[2]]))
            for node in proto.graph.node if node.op_type == "QuantizeLinear"}
    learned = {(float(scale), int(zero_point)) for scale, zero_point in (
        activation_quant_params(*layer.quantization_range())
        for layer in qat.layers if isinstance(layer, ActivationQuantizer))}
    assert (1.0, 0) in used  # the image input: pixels are the codes
    assert learned <= used  # every learned range is a scale and zero point of the file
    # The 2x2 up-convolutions run as integer Conv + pixel shuffle, as in post-training files.
    from keras_unet.export.onnx import float_ops_left

    types = [node.op_type for node in proto.graph.node]
    assert "ConvTranspose" not in types and "DepthToSpace" not in types
    assert sum(node.name.endswith("/shuffle") for node in proto.graph.node) == 2
    assert float_ops_left(path, tmp_path) == {}
    probabilities = load_runner(path).predict(images)
    assert _agreement(probabilities, qat.predict(images, verbose=0)) >= AGREEMENT_FLOOR


def test_float_models_and_untrained_ranges_are_refused():
    import keras_unet
    from keras_unet.export.qat import qat_onnx_bytes, qat_tflite_bytes
    from keras_unet.quantization import quantize_aware

    model = keras_unet.UNet((*SIZE, 3), filters=4, depth=2)
    with pytest.raises(ValueError, match="must be quantize-aware"):
        qat_tflite_bytes(model)
    with pytest.raises(ValueError, match="never set by training"):
        qat_onnx_bytes(quantize_aware(model))
    with pytest.raises(ValueError, match="Received: io_dtype='int16'"):
        qat_tflite_bytes(quantize_aware(model), io_dtype="int16")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_the_export_pipeline_writes_a_qat_model_from_its_learned_ranges(trained, tmp_path, fmt):
    """`export_tflite`/`export_onnx` (and so `keras-unet export`) of a QAT model: no
    calibration, nothing kept float, verified against the QAT model, metadata says so; a
    float export of it is its float copy, without fake-quant ops."""
    from keras_unet.export import export_onnx, export_tflite
    from keras_unet.runtime import read_metadata

    _, qat, images = trained
    export = export_tflite if fmt == "tflite" else export_onnx
    result = export(qat, tmp_path / f"m.{fmt}", quantize="int8", calibration_data=images[:80],
                    progress=False)
    assert result.calibration_method == "qat" and result.kept_float == []
    assert [a["calibration"] for a in result.repair_attempts] == ["qat"]
    assert result.verification.agreement_iou >= AGREEMENT_FLOOR
    assert read_metadata(tmp_path / f"m.{fmt}")["int8"]["calibration"] == "qat"
    if fmt == "tflite":
        from keras_unet.export.qat import tflite_float_ops

        assert tflite_float_ops((tmp_path / "m.tflite").read_bytes()) == []
        from keras_unet.runtime.tflite import interpreter_class

        plain = export(qat, tmp_path / "f.tflite", progress=False)
        assert plain.verification.max_abs_diff <= 1e-4
        interpreter = interpreter_class()(model_path=str(tmp_path / "f.tflite"))
        dtypes = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
        assert not dtypes & {"int8", "uint8"}, dtypes  # no fake-quant op became int8

        # The mask output: the same file ending in threshold + uint8 cast, the same masks (the
        # mask step is format-independent in the pipeline; one format keeps the suite's time).
        from keras_unet.runtime import load_runner

        masked = export(qat, tmp_path / f"mask.{fmt}", quantize="int8", calibration_data=images[:80],
                        progress=False, output="mask")
        assert masked.metadata["output"] == "mask" and masked.metadata["int8"]["calibration"] == "qat"
        with load_runner(tmp_path / f"m.{fmt}") as probabilities, \
                load_runner(tmp_path / f"mask.{fmt}") as head:
            same = np.mean([np.mean(np.asarray(a) == np.asarray(b)) for a, b in
                            zip(probabilities.predict_masks(images[:16]),
                                head.predict_masks(images[:16]))])
        assert same >= 0.999
