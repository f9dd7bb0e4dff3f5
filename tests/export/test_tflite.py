"""Keras -> TFLite in every quantization mode, checked against Keras through the runtime.

A tiny UNet (32x32, filters=4, depth=2) is trained for a few seconds on the shipped nuclei
images so its masks are decisive: an untrained model's probabilities sit at 0.5, where any
rounding flips pixels and mask agreement measures nothing. Calibration and verification
use real nuclei images, never noise. Conversions are marked `slow`; option checks are not.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from export_testing import (  # noqa: E402
    check_export,
    check_export_metadata,
    export_each,
    free_size_copy,
    run_export_test,
)

from keras_unet.runtime.metadata import read_metadata  # noqa: E402
from keras_unet.export.job import open_job  # noqa: E402
from keras_unet.export.options import ExportOptions  # noqa: E402
from keras_unet.export.verify import verify_bytes  # noqa: E402
from keras_unet.export.calibration import load_images  # noqa: E402
from keras_unet.export.tflite import (  # noqa: E402
    CONVERTER,
    TFLiteOptions,
    UnsupportedOpsError,
    export_tflite,
)
from keras_unet.export.verify import VerificationError  # noqa: E402
from keras_unet.datasets import nuclei_path  # noqa: E402

SIZE = (32, 32)


@pytest.fixture(scope="module")
def exports(model, held_out, tmp_path_factory):
    """One export per mode, shared by the tests below."""
    modes = {
        "none": dict(quantize="none"),
        "fp16": dict(quantize="fp16"),
        "dynamic": dict(quantize="dynamic"),
        "int8": dict(quantize="int8"),
        "int8_int8io": dict(quantize="int8", io_dtype="int8"),
        "int8_floatio": dict(quantize="int8", io_dtype="float32"),
    }
    # The floor these tests assert, stated here rather than left to the exporter's default.
    return export_each(model, tmp_path_factory.mktemp("tflite"), "tflite", modes, held_out,
                       calibration_data=nuclei_path(), calibration_size=32, agreement_floor=0.95)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fp16", "dynamic", "int8", "int8_int8io", "int8_floatio"])
def test_quantized_masks_agree_with_keras(model, held_out, exports, mode):
    assert exports[mode].verification.n_images == len(held_out)
    check_export(model, exports[mode], held_out, agreement_floor=0.95)


@pytest.mark.slow
def test_quantized_files_store_smaller_weights(model, exports):
    # Bytes saved per parameter against float32 (4 bytes each). Ideal: fp16 2, int8 3.
    # Tiny tensors (biases, and for dynamic-range any weight under 1024 elements) stay
    # float, so the bounds sit below the ideal.
    params = model.count_params()
    full = exports["none"].size_bytes
    assert full > 4 * params
    assert full - exports["fp16"].size_bytes > 0.5 * params
    assert full - exports["dynamic"].size_bytes > 1.0 * params
    # Repair may keep a layer in float (the head, on these held-out images): its weights stay
    # 4 bytes, so the bound counts only the parameters of the layers quantized.
    kept = {layer.name: layer.count_params() for layer in model._flatten_layers(include_self=False)
            if layer.name in exports["int8"].kept_float}
    assert set(kept) == set(exports["int8"].kept_float), (kept, exports["int8"].kept_float)
    assert full - exports["int8"].size_bytes > 2.0 * (params - sum(kept.values())), kept


@pytest.mark.slow
def test_int8_io_dtypes_and_pinned_input_quantization(exports):
    uint8, int8, floatio = exports["int8"], exports["int8_int8io"], exports["int8_floatio"]
    assert (uint8.input_dtype, uint8.output_dtype) == ("uint8", "uint8")
    assert (int8.input_dtype, int8.output_dtype) == ("int8", "int8")
    assert (floatio.input_dtype, floatio.output_dtype) == ("float32", "float32")
    # The input range is pinned to [0, 255]: raw uint8 pixels pass straight in.
    assert uint8.metadata["input_quantization"] == {"scale": 1.0, "zero_point": 0}
    assert int8.metadata["input_quantization"] == {"scale": 1.0, "zero_point": -128}
    assert exports["none"].input_shape == (1, 32, 32, 3)


@pytest.mark.slow
def test_metadata_is_embedded_in_every_file(model, exports):
    for name, result in exports.items():
        quantization = name.split("_")[0]  # "int8_int8io" is an int8 file
        metadata = check_export_metadata(result.path, model, "tflite", quantization,
                                         input_size=SIZE)
        assert metadata["num_classes"] == 1 and metadata["output_activation"] == "sigmoid"
        assert metadata["input_dtype"] == result.input_dtype, name


@pytest.mark.slow
def test_dynamic_range_speed_is_measured(exports):
    timings = exports["dynamic"].timings_ms
    assert set(timings) == {"float32", "dynamic"} and all(t > 0 for t in timings.values())


def saved_free_size_copy(model, tmp_path):
    path = tmp_path / "model.keras"
    free_size_copy(model).save(path)
    return path


def test_free_input_size_needs_a_valid_input_size(untrained, tmp_path):
    keras_path = saved_free_size_copy(untrained, tmp_path)
    with pytest.raises(ValueError, match="--input-size"):
        export_tflite(keras_path, tmp_path / "free.tflite", progress=False)
    with pytest.raises(ValueError, match="multiples of"):
        export_tflite(keras_path, tmp_path / "free.tflite", input_size=(30, 30), progress=False)
    assert not (tmp_path / "free.tflite").exists()


@pytest.mark.slow
def test_model_path_and_free_input_size(model, tmp_path):
    keras_path = saved_free_size_copy(model, tmp_path)
    # The images the export verifies on by default (the shipped sample) at that size.
    images = load_images(nuclei_path(), (64, 48), 3, limit=16, progress=False)
    result = run_export_test(keras_path, tmp_path, "tflite", "none", images,
                             input_size=(64, 48))
    assert result.input_shape == (1, 64, 48, 3)
    assert read_metadata(result.path)["source_model"] == "model.keras"


@pytest.mark.slow
def test_converter_runs_again_on_one_job_and_feeds_the_quantization_debugger(
        model, held_out, monkeypatch):
    """What a quantization report / repair step builds on: one job, several conversions."""
    import csv
    import io

    import tensorflow as tf

    from keras_unet.export import tflite, tflite_convert
    from keras_unet.export.calibration import tflite_representative_dataset

    written = []
    original = tflite_convert.write_saved_model
    monkeypatch.setattr(tflite_convert, "write_saved_model",
                        lambda *args: written.append(args) or original(*args))
    options = ExportOptions(quantize="int8", calibration_data=held_out[:16],
                            verification_data=held_out, verification_size=len(held_out),
                            progress=False)
    with open_job(model, options) as job:
        options = TFLiteOptions(quantize="int8", io_dtype="float32")
        first = CONVERTER.convert(job, options)
        fp16 = CONVERTER.convert(job, TFLiteOptions(quantize="fp16"))
        assert len(written) == 1  # the SavedModel is written once per job
        assert len(fp16) > len(first)
        report = verify_bytes(job, CONVERTER, first, "int8", raise_on_failure=False)
        assert report.n_images == len(held_out) and report.agreement_iou >= 0.95

        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=tflite.make_converter(job, options),
            debug_dataset=tflite_representative_dataset(job.calibration, progress=False))
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
        rows = list(csv.DictReader(io.StringIO(dump.getvalue())))
        # one row per quantized tensor, each with its error against float
        assert len(rows) > 5 and max(float(row["mean_squared_error"]) for row in rows) > 0
        # Keep the first quantized layer in float: a different file that still agrees.
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=[rows[0]["tensor_name"]])
        repaired = debugger.get_nondebug_quantized_model()
        assert repaired != first
        report = verify_bytes(job, CONVERTER, repaired, "int8", raise_on_failure=False)
        assert report.agreement_iou >= 0.95
    assert len(written) == 1


@pytest.mark.slow
def test_failed_verification_leaves_the_earlier_file_untouched(model, held_out, tmp_path):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"a previous, good export")
    # Calibrating on images 20x darker than the real ones squeezes every activation range:
    # real images then clip inside the network and the masks fall apart.
    dark = np.round(held_out / 20.0)
    with pytest.raises(VerificationError, match="agreement_iou=") as info:
        export_tflite(model, out, quantize="int8", calibration_data=dark,
                      verification_data=held_out, progress=False, repair=False)
    assert info.value.report.agreement_iou < 0.95
    assert out.read_bytes() == b"a previous, good export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


@pytest.mark.slow
def test_flex_ops_are_refused_with_their_names(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: tf.math.erfinv(x / 256.0))(inputs)
    with pytest.raises(UnsupportedOpsError, match="Erfinv.*Flex"):
        export_tflite(keras.Model(inputs, outputs), tmp_path / "flex.tflite", verify=False,
                      progress=False)
    assert not (tmp_path / "flex.tflite").exists()


def test_bad_inputs_are_clear_errors(untrained, tmp_path):
    model = untrained
    not_keras = tmp_path / "notes.keras"
    not_keras.write_text("not a model")
    with pytest.raises(ValueError, match="not a valid .keras file"):
        export_tflite(not_keras, tmp_path / "m.tflite")
    text = tmp_path / "notes.txt"
    text.write_text("not a model either")
    with pytest.raises(ValueError, match="suffix"):
        export_tflite(text, tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError, match="No Keras model"):
        export_tflite(tmp_path / "missing.keras", tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="must end in '.tflite'"):
        export_tflite(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="quantize"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match="real calibration images"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="full-integer"):
        export_tflite(model, tmp_path / "m.tflite", quantize="fp16", io_dtype="uint8")
    with pytest.raises(FileNotFoundError, match="not found"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                      calibration_data=tmp_path / "no_such_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                      calibration_data=tmp_path / "empty")
    assert not (tmp_path / "m.tflite").exists()
