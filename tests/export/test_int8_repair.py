"""The int8 step of the export (issue 10): held-out verification, automatic repair, the
per-layer report from the CLI (also when refused), and the bad inputs around them."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_unet.export.holdout import MIN_HELD_OUT, split_calibration
from keras_unet.runtime.metadata_schema import validate_metadata
from quantization_models import SIZE, spiky_model

TINT = np.array([1.0, 0.8, 0.6], "float32")


# ------------------------------------------------------------------ held-out verification

def _labelled_folder(root, count):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "images" / f"{index:03d}.png")
        Image.fromarray((rng.random((8, 8)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{index:03d}.png")
    return root


def test_a_labelled_folder_holds_out_32_images_with_their_masks(tmp_path):
    split = split_calibration(_labelled_folder(tmp_path / "data", 80))
    assert len(split.verification) == MIN_HELD_OUT and len(split.calibration) == 80 - MIN_HELD_OUT
    assert not set(split.verification) & set(split.calibration)
    for image, mask in zip(split.verification, split.masks):
        assert os.path.basename(image) == os.path.basename(mask) and "/masks/" in mask
    assert "32 of 80 images" in split.description
    assert split_calibration(tmp_path / "data").verification == split.verification  # seeded


def test_small_sets_are_halved_and_tiny_sets_reuse_the_calibration_images():
    images = np.zeros((20, 4, 4, 3), np.float32) + np.arange(20)[:, None, None, None]
    split = split_calibration(images)
    assert len(split.verification) == 10 and len(split.calibration) == 10
    held = {int(x[0, 0, 0]) for x in split.verification}
    assert held.isdisjoint({int(x[0, 0, 0]) for x in split.calibration})
    tiny = split_calibration(images[:5])
    assert tiny.verification is None and "too few" in tiny.description


# ------------------------------------------------------------------ repair (slow: converts)

def decisive_spiky_model(images, rare=False, spike_at="logit"):
    """The spiky model with its head rescaled so its logits spread over about +-5 around a
    median of 0: an untrained model's probabilities sit at 0.5, where any rounding flips
    pixels and agreement measures nothing."""
    import keras

    model = spiky_model(stride=1, rare=rare, spike_at=spike_at)
    head = model.get_layer("head")
    logits = keras.Model(model.inputs, head.output).predict(images, verbose=0)
    kernel, bias = head.get_weights()
    scale = 5.0 / float(np.std(logits))
    head.set_weights([kernel * scale, (bias - np.median(logits)) * scale])
    return model


@pytest.fixture(scope="module")
def spiky_images():
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.calibration import load_images

    images = np.round(load_images(nuclei_path(), size=SIZE, channels=3, limit=40, progress=False) * TINT)
    images[:, -1, -1, :] = np.minimum(images[:, -1, -1, :], 200.0)  # the spike fires only when pinned
    return images


@pytest.mark.slow
def test_tflite_repair_keeps_the_bad_layer_in_float_and_meets_the_floor(spiky_images, tmp_path):
    from keras_unet.export import export_tflite
    from keras_unet.export.verify import VerificationError
    from keras_unet.runtime import read_metadata

    model = decisive_spiky_model(spiky_images)
    with pytest.raises(VerificationError) as refused:
        export_tflite(model, tmp_path / "pure.tflite", quantize="int8", calibration_data=spiky_images,
                      repair=False, progress=False, agreement_floor=0.98)
    outcome = refused.value.outcome
    assert not (tmp_path / "pure.tflite").exists()
    assert outcome.layer_report[0]["name"] == "spike" and outcome.verification.agreement_iou < 0.98
    assert "held out from calibration" in outcome.verification.source

    result = export_tflite(model, tmp_path / "repaired.tflite", quantize="int8",
                           calibration_data=spiky_images, progress=False, agreement_floor=0.98)
    assert result.verification.passed and result.verification.agreement_iou >= 0.98
    assert "spike" in result.kept_float
    assert result.repair_attempts[0]["passed"] is False
    assert any(a["passed"] and a["kept_float"] == result.kept_float for a in result.repair_attempts)
    # The candidates repair measured on the whole file, the spike among those it kept.
    kept = [c for c in result.repair_candidates if c["added"]]
    assert any("spike" in c["names"] and c["gain"] > 0 for c in kept)
    int8_metadata = read_metadata(tmp_path / "repaired.tflite")["int8"]
    assert int8_metadata["kept_float"] == result.kept_float
    validate_metadata(read_metadata(tmp_path / "repaired.tflite"))  # the int8 section checked
    assert "kept in float" in result.summary() and "spike" in result.summary()
    # What the float layers cost in speed: result, metadata, summary.
    cost = result.kept_float_latency_ms
    assert set(cost) == {"all_int8", "this_file"} and min(cost.values()) > 0
    assert int8_metadata["kept_float_latency_ms"] == cost
    assert "latency with those ops kept" in result.summary()
    assert "with every layer in int8" in result.summary()


@pytest.mark.slow
def test_files_the_runtime_cannot_load_are_passed_over_and_repair_finds_one_it_can(spiky_images, tmp_path):
    from keras_unet.export import export_tflite

    model = decisive_spiky_model(spiky_images, spike_at="features")
    with pytest.raises(RuntimeError, match="No int8 file could be loaded by the runtime.*XNNPACK"):
        export_tflite(model, tmp_path / "pure.tflite", quantize="int8", calibration_data=spiky_images,
                      repair=False, progress=False, agreement_floor=0.98)
    assert not (tmp_path / "pure.tflite").exists()

    result = export_tflite(model, tmp_path / "m.tflite", quantize="int8",
                           calibration_data=spiky_images, progress=False, agreement_floor=0.98)
    unloaded = [attempt for attempt in result.repair_attempts if attempt["error"]]
    assert unloaded and unloaded[0]["kept_float"] == [] and unloaded[0]["agreement_iou"] is None
    assert "spike" in result.kept_float and result.verification.agreement_iou >= 0.98
    assert any("did not load in the runtime" in warning for warning in result.warnings)
    assert result.kept_float_latency_ms == {}  # no all-int8 file to time it against


@pytest.mark.slow
def test_onnx_repair_reports_per_layer_and_records_the_activation_type(spiky_images, tmp_path):
    from keras_unet.export import export_onnx
    from keras_unet.runtime import read_metadata

    result = export_onnx(decisive_spiky_model(spiky_images), tmp_path / "m.onnx", quantize="int8",
                         calibration_data=spiky_images, progress=False, layer_report=True,
                         agreement_floor=0.98)
    assert result.verification.passed and result.layer_report
    assert all(result.layer_report[i]["sqnr_db"] is None or result.layer_report[i + 1]["sqnr_db"] is None
               or result.layer_report[i]["sqnr_db"] <= result.layer_report[i + 1]["sqnr_db"]
               for i in range(len(result.layer_report) - 1))
    import onnx

    int8 = read_metadata(tmp_path / "m.onnx")["int8"]
    validate_metadata(read_metadata(tmp_path / "m.onnx"))  # the int8 section checked
    timings, float_ops = int8["activation_type_ms"], int8["activation_type_float_ops"]
    assert set(timings) == set(float_ops) == {"uint8", "int8"}
    # The fastest among those with the fewest ops left in float. The times are recorded to the
    # microsecond, so two can tie there (and the file's JSON lists its keys sorted).
    fewest = [kind for kind in timings if float_ops[kind] == min(float_ops.values())]
    chosen = int8["activation_type"]
    assert chosen in fewest and timings[chosen] == min(timings[kind] for kind in fewest), int8
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    inits = {i.name: i.data_type for i in graph.initializer}
    zero_points = {inits[n.input[2]] for n in graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits}
    expected = {"uint8": onnx.TensorProto.UINT8, "int8": onnx.TensorProto.INT8}
    # The faster form is the one written; int16 zero points exactly where repair kept ops at int16.
    wide = {onnx.TensorProto.INT16} if int8.get("kept_int16") else set()
    assert zero_points == {expected[int8["activation_type"]]} | wide


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_percentile_ranges_clip_a_rare_outlier_and_repair_starts_from_them(spiky_images, tmp_path, fmt):
    """One calibration pixel stretches the spike's range to ~1000. The spike sits on the
    logit, whose range every binary int8 file now clips to [-8, 8]
    (keras_unet.export.quantization.logit_range), so min/max calibration no longer loses
    the layer (it did: agreement < 0.9); both calibrations are tried, percentile first,
    and what is written builds on the better one."""
    from keras_unet.export import export_onnx, export_tflite

    images = spiky_images.copy()
    images[..., 0] = np.minimum(images[..., 0], 254.0)  # the spike never fires when verifying
    model = decisive_spiky_model(images, rare=True)
    export, options = ((export_tflite, {"check_speed": False}) if fmt == "tflite"
                       else (export_onnx, {"activation_type": "uint8"}))
    result = export(model, tmp_path / f"m.{fmt}", quantize="int8", calibration_data=images,
                    progress=False, **options)
    percentile, minmax = result.repair_attempts[0], result.repair_attempts[1]
    assert (percentile["calibration"], minmax["calibration"]) == ("percentile", "minmax")
    assert minmax["kept_float"] == percentile["kept_float"] == []
    assert min(minmax["agreement_iou"], percentile["agreement_iou"]) > 0.95, result.repair_attempts
    better = max((percentile, minmax), key=lambda attempt: attempt["agreement_iou"])
    # Then the better one with its biases corrected for the int8 weights, and with its weights
    # rounded against the calibration images; whichever agrees best is written.
    treated = [better["calibration"] + suffix for suffix in ("+bias", "+gptq")]
    assert [a["calibration"] for a in result.repair_attempts[2:4]] == treated
    assert result.calibration_method in [better["calibration"]] + treated
    corrected = result.calibration_method.endswith("+bias")
    rounded = result.calibration_method.endswith("+gptq")
    assert ("biases corrected for the int8 weights" in result.summary()) == corrected
    assert ("weights rounded against the calibration data" in result.summary()) == rounded
    assert result.verification.agreement_iou >= max(a["agreement_iou"] for a in result.repair_attempts[:4]
                                                    if not a["kept_float"] and not a.get("kept_int16"))


# ------------------------------------------------------------------ the CLI

@pytest.fixture(scope="module")
def spiky_files(spiky_images, tmp_path_factory):
    root = tmp_path_factory.mktemp("spiky_cli")
    decisive_spiky_model(spiky_images).save(root / "spiky.keras")
    (root / "calib" / "images").mkdir(parents=True)
    for index, image in enumerate(spiky_images):
        Image.fromarray(image.astype(np.uint8)).save(root / "calib" / "images" / f"{index:03d}.png")
    return root


def _export(root, *args):
    from keras_unet import cli

    return cli.main(["export", str(root / "spiky.keras"), "--quiet", *map(str, args)])


@pytest.mark.slow
def test_cli_writes_the_report_also_when_the_export_is_refused(spiky_files, capsys):
    out, report = spiky_files / "refused.tflite", spiky_files / "refused.json"
    code = _export(spiky_files, "--out", out, "--quantize", "int8", "--calibration-data",
                   spiky_files / "calib", "--no-repair", "--report", report, "--agreement-floor", "0.98")
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    data = json.loads(report.read_text())
    assert data["written"] is False and data["layers"][0]["name"] == "spike"
    assert data["agreement_iou"] < data["agreement_floor"] == 0.98
    assert "spike" in err.split("#")[1]  # the worst-layers table is printed


@pytest.mark.slow
def test_cli_repairs_and_writes_the_report(spiky_files, capsys):
    out, report = spiky_files / "ok.tflite", spiky_files / "ok.json"
    assert _export(spiky_files, "--out", out, "--quantize", "int8", "--calibration-data",
                   spiky_files / "calib", "--report", report, "--agreement-floor", "0.98") == 0
    printed = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert out.exists() and data["written"] and "spike" in data["kept_float"]
    assert {"name", "op", "sqnr_db", "rmse_over_scale", "max_abs_error", "kept_float"} <= set(data["layers"][0])
    assert set(data["kept_float_latency_ms"]) == {"all_int8", "this_file"}
    assert data["verification"]["agreement_se"] > 0
    assert "SQNR dB" in printed and "kept in float" in printed
    assert "latency with those ops kept" in printed and "repair measured" in printed
    assert data["candidates"] and all({"names", "precision", "gain", "cost", "cost_unit", "added"}
                                      <= set(c) for c in data["candidates"])


@pytest.mark.parametrize("args, message", [
    (["--quantize", "int8", "--calibration-data", "{root}/calib", "--report", "{root}/no/such/r.json"],
     "does not exist"),
    (["--quantize", "int8", "--calibration-data", "{root}/calib", "--agreement-floor", "1.5"], "[0, 1]"),
    (["--quantize", "int8", "--calibration-data", "{root}/calib", "--agreement-floor", "-0.1"], "[0, 1]"),
    (["--quantize", "fp16", "--repair"], "--repair"),
    (["--quantize", "none", "--report", "{root}/r.json"], "--quantize int8"),
    # Refused only after the conversion, so it is in the slow lane.
    pytest.param(["--quantize", "int8", "--calibration-data", "{root}/calib", "--verification-data",
                  "{root}/empty"], "no images", marks=pytest.mark.slow),
    (["--quantize", "int8", "--calibration-data", "{root}/calib", "--threads", "0"], "--threads"),
])
def test_cli_bad_int8_options_fail_with_one_line(tmp_path, capsys, args, message):
    import keras

    from keras_unet import cli

    root = tmp_path
    (root / "calib").mkdir()
    gradient = np.linspace(0, 250, 64).reshape(8, 8).astype(np.uint8)  # a real-looking image
    Image.fromarray(np.stack([gradient, gradient.T, 255 - gradient], -1)).save(root / "calib" / "a.png")
    (root / "empty").mkdir()
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(1, 1, activation="sigmoid")]).save(
        root / "m.keras")
    try:
        code = cli.main(["export", str(root / "m.keras"), "--out", str(root / "m.tflite"), "--quiet",
                         *[a.format(root=root) for a in args]])
    except SystemExit as exit:  # refused while the options were parsed
        code = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (root / "m.tflite").exists()


def test_images_calibration_would_not_read_are_held_out_for_verification():
    images = np.zeros((300, 4, 4, 3), np.float32)
    split = split_calibration(images, calibration_size=100)
    assert len(split.verification) == 150 and len(split.calibration) == 150  # half the set
    split = split_calibration(images[:180], calibration_size=100)
    assert len(split.verification) == 80 and len(split.calibration) == 100
    assert len(split_calibration(images[:100], calibration_size=100).verification) == MIN_HELD_OUT
