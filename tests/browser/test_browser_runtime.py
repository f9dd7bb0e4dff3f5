"""Exported files in headless Chromium (`keras_unet.benchmarks.browser.run_in_browser`):
onnxruntime-web's masks against onnxruntime in Python, MediaPipe web's category masks against
MediaPipe in Python, latency measured in the page, and the one-line errors for a file the
browser cannot run. One browser session runs every file (module fixture)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FP32_MIN_AGREEMENT = 0.999
INT8_MIN_AGREEMENT = 0.99
RUNS = 10


@pytest.fixture(scope="module")
def test_images(held_out_images):
    return held_out_images.astype(np.uint8)


def _onnx_with_an_op_no_runtime_has(path):
    """Rfft (com.microsoft, for audio): no CPU kernel, in Python or compiled to wasm."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Rfft", ["images"], ["probabilities"], domain="com.microsoft")], "rfft",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _tflite_with_a_custom_op(path):
    """A uint8-input `.tflite` whose BesselI0 is a custom op: no TFLite build resolves it."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.uint8)])
    def segment(images):
        gray = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1, keepdims=True) / 255.0
        return tf.sigmoid(tf.math.special.bessel_i0(gray))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([segment.get_concrete_function()],
                                                                segment)
    converter.allow_custom_ops = True
    path.write_bytes(converter.convert())
    return path


def _ort_format(onnx_path, path):
    """The `.onnx` file in ONNX Runtime's own format, as `keras-unet export --out m.ort` writes
    it (`export.ort.convert_to_ort`: without the x86-only NCHWc layout of ORT_ENABLE_ALL, which
    a float Conv kept by repair would carry and onnxruntime-web does not have)."""
    from keras_unet.export.ort import convert_to_ort

    convert_to_ort(onnx_path, path)
    return path


@pytest.fixture(scope="module")
def browser_results(browser_files, test_images, tmp_path_factory):
    from keras_unet.benchmarks.browser import run_in_browser

    folder = tmp_path_factory.mktemp("browser_more")
    files = dict(browser_files,
                 unsupported_op_onnx=_onnx_with_an_op_no_runtime_has(folder / "rfft.onnx"),
                 int8_ort=_ort_format(browser_files["int8_onnx"], folder / "unet_int8.ort"),
                 custom_op_tflite=_tflite_with_a_custom_op(folder / "custom_op.tflite"))
    names = ["fp32_onnx", "int8_onnx", "int8_ort", "int8_tflite", "float_tflite_without_metadata",
             "unsupported_op_onnx", "custom_op_tflite"]
    results = run_in_browser([files[n] for n in names], test_images, runs=RUNS, warmup=2)
    return dict(zip(names, results))


def _python_masks(path, images):
    from keras_unet.runtime import load_runner

    with load_runner(path) as runner:
        return runner.predict_masks(images)


def _agreement(result, reference):
    assert result.error is None, result.error
    masks = np.stack(result.masks)
    assert masks.shape == reference.shape
    assert 0.01 < reference.mean() < 0.99, "trivial masks: the check would prove nothing"
    return float(np.mean(masks == reference))


def _check_measured(result, backend):
    assert result.backend == backend
    assert len(result.latencies_ms) == RUNS and min(result.latencies_ms) > 0
    latency = result.latency()
    assert 0 < latency["latency_p50_ms"] <= latency["latency_p90_ms"] <= latency["latency_p99_ms"]
    assert result.environment["browser"] == "chromium"
    assert result.environment["browser_version"].split(".")[0].isdigit()
    assert result.environment["cross_origin_isolated"] is True  # COOP/COEP served: wasm threads
    summary = result.summary()
    assert summary["runtime"] == "browser" and summary["backend"] == backend
    assert summary["latency_p50_ms"] == latency["latency_p50_ms"] and "error" not in summary


def test_fp32_onnx_masks_equal_onnxruntime_python(browser_results, browser_files, test_images):
    result = browser_results["fp32_onnx"]
    agreement = _agreement(result, _python_masks(browser_files["fp32_onnx"], test_images))
    assert agreement >= FP32_MIN_AGREEMENT, agreement
    _check_measured(result, "onnxruntime-web/wasm")
    assert result.threads >= 1
    from keras_unet.runtime import load_runner

    with load_runner(browser_files["fp32_onnx"]) as runner:
        probabilities = runner.predict(test_images)
    np.testing.assert_allclose(np.stack(result.probabilities), probabilities, atol=1e-4)


def test_int8_onnx_agrees_with_the_python_int8_file(browser_results, browser_files, test_images):
    result = browser_results["int8_onnx"]
    agreement = _agreement(result, _python_masks(browser_files["int8_onnx"], test_images))
    assert agreement >= INT8_MIN_AGREEMENT, agreement
    _check_measured(result, "onnxruntime-web/wasm")


def test_an_ort_format_file_runs_like_its_onnx_file(browser_results, test_images):
    result = browser_results["int8_ort"]
    agreement = _agreement(result, _python_masks(result.path, test_images))
    assert agreement >= INT8_MIN_AGREEMENT, agreement
    assert result.backend == "onnxruntime-web/wasm"


def _mediapipe_python_categories(path, images):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           output_category_mask=True)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        return np.stack([np.array(segmenter.segment(mp.Image(
            image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))).category_mask
            .numpy_view()).reshape(image.shape[:2]) for image in images])


def test_mediapipe_web_category_mask_equals_mediapipe_python(browser_results, browser_files,
                                                            test_images):
    result = browser_results["int8_tflite"]
    assert result.error is None, result.error
    theirs = _mediapipe_python_categories(browser_files["int8_tflite"], test_images)
    # The masks come from the web category mask: 0 (the one class) is the foreground.
    web_categories = 1 - np.stack(result.masks)
    assert np.array_equal(web_categories * 255, theirs), float(np.mean(web_categories * 255 == theirs))
    assert result.labels == ["nucleus"]
    _check_measured(result, "mediapipe-tasks-vision/wasm")
    # And scored like the other rows: the masks agree with our own runner on the file.
    assert _agreement(result, _python_masks(browser_files["int8_tflite"], test_images)) >= INT8_MIN_AGREEMENT


def test_a_float_tflite_without_normalization_metadata_is_one_clear_line(browser_results):
    result = browser_results["float_tflite_without_metadata"]
    assert result.masks is None and result.latencies_ms == []
    assert "\n" not in result.error
    assert result.error.startswith(str(result.path))
    assert "normalization options" in result.error and "keras-unet export" in result.error
    assert result.summary()["error"] == result.error and "latency_p50_ms" not in result.summary()


def test_a_file_with_an_unsupported_op_names_the_op(browser_results):
    # ONNX: onnxruntime in Python refuses it first (the same kernels are compiled to wasm).
    result = browser_results["unsupported_op_onnx"]
    assert result.masks is None and "\n" not in result.error
    assert result.error.startswith(f"{result.path}: onnxruntime-web/wasm cannot run op Rfft ")
    # TFLite: the page's own error (MediaPipe's console), the op named.
    result = browser_results["custom_op_tflite"]
    assert result.masks is None and "\n" not in result.error
    assert result.error.startswith(f"{result.path}: mediapipe-tasks-vision/wasm cannot run op BesselI0 ")
    assert "unresolved custom op" in result.error
