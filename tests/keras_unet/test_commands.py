"""The train / evaluate / predict commands, run in-process on tiny settings (training: slow tests)."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from keras_unet import cli
from keras_unet.datasets import nuclei_path

TINY = ["--image-size", "32", "--channels", "1", "--filters", "4", "--depth", "2",
        "--batch-size", "4", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def nuclei_subset(tmp_path_factory):
    """12 training and 4 validation pairs copied from the shipped set."""
    root = tmp_path_factory.mktemp("nuclei")
    names = sorted(os.listdir(nuclei_path() / "images"))[:16]
    for split, chunk in (("train", names[:12]), ("val", names[12:])):
        for sub in ("images", "masks"):
            os.makedirs(root / split / sub)
            for name in chunk:
                shutil.copy(nuclei_path() / sub / name, root / split / sub / name)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained tiny U-Net saved as model.keras: what predict and evaluate read, whose
    checks do not depend on training (its masks are about a fifth foreground)."""
    import keras

    import keras_unet

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2).save(path)
    return path


@pytest.fixture(scope="module")
def trained_run(nuclei_subset, tmp_path_factory):
    """A run trained for 2 epochs (slow tests only)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    code = cli.main(["train", "--data", str(nuclei_subset / "train"), "--val-data",
                     str(nuclei_subset / "val"), "--out", str(out), "--epochs", "2", *TINY])
    assert code == 0
    return out


@pytest.mark.slow
def test_train_writes_model_metrics_and_log(trained_run):
    for name in ("model.keras", "last.keras", "training.csv", "metrics.json", "config.json"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert 0.0 <= metrics["val_iou"] <= 1.0 and 0.0 <= metrics["val_dice"] <= 1.0
    assert metrics["epochs_completed"] == 2
    with open(trained_run / "training.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert "val_iou" in rows[0]


@pytest.mark.slow
def test_finished_run_is_not_overwritten_but_can_be_extended(trained_run, nuclei_subset, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "model.keras").read_bytes()
    args = ["train", "--data", str(nuclei_subset / "train"), "--val-data", str(nuclei_subset / "val"),
            "--out", str(run), *TINY]
    assert cli.main([*args, "--epochs", "2"]) == 2
    assert "finished run (2 epochs" in capsys.readouterr().err
    assert (run / "model.keras").read_bytes() == before
    assert cli.main([*args, "--epochs", "3", "--filters", "8"]) == 2
    assert re.search("different settings.*--filters was 4, now 8", capsys.readouterr().err)
    assert cli.main([*args, "--epochs", "3"]) == 0
    with open(run / "training.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]


@pytest.mark.slow
def test_a_resumed_run_keeps_early_stoppings_count(trained_run, nuclei_subset, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    state = json.loads((run / "config.json").read_text())
    # A best no epoch can beat, reached one epoch before the stop: with --patience 2 the next
    # epoch is the last (Keras' EarlyStopping alone would start counting afresh).
    state.update(best_val_iou=1.0, epochs_since_best=1)
    (run / "config.json").write_text(json.dumps(state))
    args = ["train", "--data", str(nuclei_subset / "train"), "--val-data", str(nuclei_subset / "val"),
            "--out", str(run), "--epochs", "6", "--patience", "2", *TINY]
    assert cli.main(args) == 0
    state = json.loads((run / "config.json").read_text())
    assert (state["epochs_completed"], state["epochs_since_best"], state["finished"]) == (3, 2, True)
    with open(run / "training.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    capsys.readouterr()
    # The same command again: the run is finished, and says what would continue it.
    metrics = (run / "metrics.json").read_bytes()
    assert cli.main(args) == 2
    assert "early stopping ended it after 3 epochs, the last 2 without" in capsys.readouterr().err
    assert (run / "metrics.json").read_bytes() == metrics
    # Stopped early, then interrupted while being scored: the rerun trains nothing and scores.
    state["finished"] = False
    (run / "config.json").write_text(json.dumps(state))
    (run / "metrics.json").unlink()
    assert cli.main(args) == 0
    assert "early stopping had ended the run" in capsys.readouterr().out
    with open(run / "training.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 3
    # Every epoch trained (no early stop), interrupted while being scored: it says so.
    state.update(finished=False, epochs_since_best=0)
    (run / "config.json").write_text(json.dumps(state))
    (run / "metrics.json").unlink()
    assert cli.main([*args[:-len(TINY) - 4], "--epochs", "3", "--patience", "2", *TINY]) == 0
    out = capsys.readouterr().out
    assert "all 3 epochs were trained before" in out and "early stopping" not in out


def test_an_early_stopped_run_continues_only_with_more_patience(tmp_path):
    import argparse

    from keras_unet.commands.train import RUN_DEFINING, add_arguments, run_folder

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "30"])
    state = {"args": {k: getattr(args, k) for k in RUN_DEFINING}, "epochs_completed": 14,
             "finished": True, "best_val_iou": 0.8, "epochs_since_best": args.patience}
    folder = run_folder(args)
    with pytest.raises(ValueError, match=rf"the last {args.patience} without .* Raise --patience above"):
        folder.check(state, args.epochs, args.patience)
    assert folder.check(state, args.epochs, args.patience + 1) == 14
    del state["epochs_since_best"]  # a run saved before keras-unet kept the count
    assert folder.check(state, args.epochs, args.patience + 1) == 14


def test_a_run_saved_before_an_option_existed_resumes_with_that_options_default(tmp_path):
    import argparse

    from keras_unet.commands.train import RUN_DEFINING, add_arguments, run_defaults, run_folder

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "3"])
    saved = {k: getattr(args, k) for k in RUN_DEFINING if k not in ("qat", "init")}  # an older run
    state = {"args": saved, "epochs_completed": 1, "finished": False}
    assert run_defaults()["qat"] is False
    assert run_folder(args).check(state, args.epochs, args.patience) == 1
    args.qat = True  # a setting the old run did not have still has to match its default
    with pytest.raises(ValueError, match="--qat was False, now True"):
        run_folder(args).check(state, args.epochs, args.patience)


def test_train_refuses_a_folder_that_is_not_a_run(nuclei_subset, tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("mine")
    status = cli.main(["train", "--data", str(nuclei_subset / "train"), "--out", str(tmp_path), *TINY])
    assert status == 2
    assert "not a keras-unet run folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_evaluate_matches_numpy_scores_of_predicted_masks(tiny_model, nuclei_subset, tmp_path):
    from keras_unet.runtime.scores import segmentation_scores
    from keras_unet.runtime import imageio, load_runner

    report = tmp_path / "scores.json"
    assert cli.main(["evaluate", str(tiny_model), "--data",
                     str(nuclei_subset / "val"), "--json", str(report)]) == 0
    scores = json.loads(report.read_text())
    runner = load_runner(tiny_model)
    pairs = imageio.list_pairs(nuclei_subset / "val")
    predicted = runner.predict_masks([imageio.read_image(i, channels=1) for i, _ in pairs])
    assert 0.05 < np.mean(predicted) < 0.95  # masks with both classes: the IoU is not trivial
    truth = [imageio.decode_mask(imageio.read_mask(m), "binary") for _, m in pairs]
    expected = segmentation_scores(truth, predicted, num_classes=1)
    assert scores["images"] == 4
    assert scores["iou"] == pytest.approx(expected["iou"], abs=1e-9)


def test_predict_writes_masks_at_each_image_size_and_never_overwrites(tiny_model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (40, 56), "b.jpg": (32, 32)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(images / name)
    out = tmp_path / "masks"
    assert cli.main(["predict", str(tiny_model), "--images", str(images),
                     "--out", str(out), "--overlay"]) == 0
    for name, (h, w) in sizes.items():
        mask = np.asarray(Image.open(out / (os.path.splitext(name)[0] + ".png")))
        assert mask.shape == (h, w)
        assert set(np.unique(mask)) <= {0, 255}
        assert (out / "overlays" / (os.path.splitext(name)[0] + ".png")).is_file()
    before = (out / "a.png").read_bytes()
    capsys.readouterr()
    assert cli.main(["predict", str(tiny_model), "--images", str(images),
                     "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == before


def test_bad_image_size_is_rejected(nuclei_subset, tmp_path, capsys):
    assert cli.main(["train", "--data", str(nuclei_subset / "train"), "--out", str(tmp_path / "r"),
                     *TINY, "--image-size", "30"]) == 2
    assert "multiples of 2**depth = 4" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("strategy, replicas", [("mirrored", "2")])
def test_distribution_strategies_train_on_two_logical_cpus(nuclei_subset, tmp_path, strategy, replicas):
    """mirrored uses both logical CPUs (multiworker is refused: tests/keras_unet/test_distribution.py)."""
    script = textwrap.dedent(
        """
        import sys, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_unet import cli
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    out = tmp_path / "mirrored"
    result = subprocess.run(
        [sys.executable, "-c", script, "train", "--data", str(nuclei_subset / "train"),
         "--val-data", str(nuclei_subset / "val"), "--out", str(out), "--epochs", "1",
         "--strategy", strategy, *TINY],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{strategy} strategy: training on {replicas} replica(s)" in result.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs_completed"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_predict_and_evaluate_take_exported_files(trained_run, nuclei_subset, tmp_path, fmt):
    from keras_unet.export.onnx import export_onnx
    from keras_unet.export.tflite import export_tflite

    exported = tmp_path / f"model.{fmt}"
    exporter = export_tflite if fmt == "tflite" else export_onnx
    exporter(str(trained_run / "model.keras"), str(exported), verification_data=str(nuclei_subset / "val"),
             progress=False)
    keras_masks, file_masks = tmp_path / "keras_masks", tmp_path / "file_masks"
    images = str(nuclei_subset / "val" / "images")
    assert cli.main(["predict", str(trained_run / "model.keras"), "--images", images, "--out", str(keras_masks)]) == 0
    assert cli.main(["predict", str(exported), "--images", images, "--out", str(file_masks)]) == 0
    for name in os.listdir(keras_masks):
        # float32 exports match Keras within 1e-4, so the thresholded masks are the same
        np.testing.assert_array_equal(np.asarray(Image.open(file_masks / name)),
                                      np.asarray(Image.open(keras_masks / name)))
    report = tmp_path / "scores.json"
    assert cli.main(["evaluate", str(exported), "--data", str(nuclei_subset / "val"), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["images"] == 4
