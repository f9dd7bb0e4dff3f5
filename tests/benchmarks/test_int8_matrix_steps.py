"""Which steps the int8 matrix runs: training, exports and benchmark are each redone only when
their output is missing or older than their input, so a rerun after an export change keeps
the trained models. The CLI calls are replaced by a fake that writes what each command would
(with increasing modification times) and records the command; the commands themselves are
tested where they live."""

import json
import os

import pytest

from keras_unet.benchmarks import int8_matrix
from keras_unet.benchmarks.int8_matrix_data import Labels, is_current, matrix_folders, training_done

CAMVID = Labels(11, 11, ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                         "Car", "Pedestrian", "Bicyclist"))


class FakeCli:
    """Stands in for `int8_matrix.run_cli`: writes each command's outputs, records the command."""

    def __init__(self):
        self.commands = []
        self.clock = 1_000_000
        self.refuse = set()
        self.bench_error = None

    def _write(self, path, text):
        path = str(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
        self.clock += 10
        os.utime(path, (self.clock, self.clock))

    def __call__(self, *args, log):
        args = [str(arg) for arg in args]
        self.commands.append(args)
        option = lambda name: args[args.index(name) + 1]  # noqa: E731
        if args[0] == "train":
            run = option("--out")
            self._write(f"{run}/model.keras", "model")
            self._write(f"{run}/metrics.json", "{}")
            self._write(f"{run}/config.json", json.dumps(
                {"finished": True, "epochs_completed": int(option("--epochs")), "epochs_since_best": 0}))
        elif args[0] == "export":
            out = option("--out")
            if "--report" in args:
                self._write(option("--report"), json.dumps({"agreement_iou": 0.97, "kept_float": ["stem"]}))
            if os.path.basename(out) in self.refuse:
                return 1
            self._write(out, "file")
        elif args[0] == "bench":
            files = args[1:args.index("--data")]
            rows = [{"model": path, "num_classes": 11, "agreement_iou": 0.99, "pixel_agreement": 0.995,
                     "agreement_mean_iou": 0.9, "iou": 0.55, "iou_drop": 0.001, "latency_p50_ms": 10.0,
                     "speedup_vs_reference": 4.0, "error": self.bench_error} for path in files]
            self._write(option("--json"), json.dumps({"rows": rows}))
        return 0

    def take(self):
        """The commands since the last call, as (command, output or first file) pairs."""
        taken = [(c[0], os.path.basename(c[c.index("--out") + 1]) if "--out" in c else c[0]) for c in self.commands]
        self.commands = []
        return taken


@pytest.fixture()
def fake_cli(monkeypatch):
    fake = FakeCli()
    monkeypatch.setattr(int8_matrix, "run_cli", fake)
    return fake


def _run(work, epochs=20):
    folders = {"train": work / "train", "test": work / "val"}
    return int8_matrix.run_model("vanilla_bn", folders, work, epochs, 2, (128, 160), 3, CAMVID)


def test_a_multi_class_model_trains_with_its_classes_at_its_size(tmp_path, fake_cli):
    rows = _run(tmp_path)
    train = fake_cli.commands[0]
    assert train[0] == "train" and train[train.index("--image-size") + 1:][:2] == ["128", "160"]
    assert train[train.index("--num-classes") + 1] == "11" and train[train.index("--ignore-index") + 1] == "11"
    assert train[train.index("--mask-encoding") + 1] == "index" and "Bicyclist" in train
    assert train[train.index("--data") + 1] == str(tmp_path / "train")
    exports = [c for c in fake_cli.commands if c[0] == "export"]
    assert all(c[c.index("--calibration-data") + 1] == str(tmp_path / "train") for c in exports)
    bench = fake_cli.commands[-1]
    assert bench[0] == "bench" and bench[bench.index("--data") + 1] == str(tmp_path / "val")
    # Given to the benchmark too: the model's metadata need not carry the void value.
    assert bench[bench.index("--ignore-index") + 1] == "11" and bench[bench.index("--mask-encoding") + 1] == "index"
    assert [row["file"] for row in rows] == ["int8.tflite", "int8.onnx"]
    assert rows[0]["num_classes"] == 11 and rows[0]["kept_float"] == ["stem"]
    assert int8_matrix.meets_targets(rows[0])


def test_a_rerun_reuses_the_model_and_redoes_only_what_changed(tmp_path, fake_cli):
    _run(tmp_path)
    assert [name for name, _ in fake_cli.take()] == ["train", "export", "export", "export", "bench"]
    _run(tmp_path)
    assert fake_cli.take() == []  # everything current
    (tmp_path / "vanilla_bn" / "int8.tflite").unlink()  # an export changed: its file deleted
    _run(tmp_path)
    assert fake_cli.take() == [("export", "int8.tflite"), ("bench", "bench")]


def test_a_benchmark_with_a_failed_row_runs_again(tmp_path, fake_cli):
    fake_cli.bench_error = "ValueError: mask value 11"
    _run(tmp_path)
    fake_cli.take()
    fake_cli.bench_error = None
    _run(tmp_path)
    assert fake_cli.take() == [("bench", "bench")]
    _run(tmp_path)
    assert fake_cli.take() == []


def test_a_refused_export_leaves_the_others_and_is_benched_without(tmp_path, fake_cli):
    fake_cli.refuse = {"int8.onnx"}
    rows = _run(tmp_path)
    bench = fake_cli.commands[-1]
    assert not any(arg.endswith("int8.onnx") for arg in bench)
    assert rows[1] == {"model": "vanilla_bn", "file": "int8.onnx", "mode": "int8", "error": "refused",
                       "best_agreement": 0.97}
    fake_cli.take()
    fake_cli.refuse = set()
    _run(tmp_path)  # written now: the benchmark measured other files, so it runs again
    assert fake_cli.take() == [("export", "int8.onnx"), ("bench", "bench")]


def test_more_epochs_continue_training_and_redo_the_exports_with_force(tmp_path, fake_cli):
    _run(tmp_path, epochs=1)
    fake_cli.take()
    _run(tmp_path, epochs=3)
    assert [command[0] for command in fake_cli.commands] == ["train", "export", "export", "export", "bench"]
    assert all("--force" in c for c in fake_cli.commands if c[0] == "export")


def test_training_done_reads_the_run_folder(tmp_path):
    run = tmp_path / "run"
    assert not training_done(run, 1)
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    state = {"finished": True, "epochs_completed": 5, "epochs_since_best": 0}
    (run / "config.json").write_text(json.dumps(state))
    assert training_done(run, 5) and not training_done(run, 6)
    (run / "config.json").write_text(json.dumps(dict(state, epochs_since_best=10)))
    assert training_done(run, 6)  # stopped early: more epochs would not continue it
    (run / "config.json").write_text(json.dumps(dict(state, finished=False)))
    assert not training_done(run, 5)


def test_is_current_compares_modification_times(tmp_path):
    source, built = tmp_path / "model.keras", tmp_path / "int8.tflite"
    assert not is_current(built, [source])
    source.write_text("m")
    built.write_text("f")
    os.utime(source, (100, 100))
    os.utime(built, (200, 200))
    assert is_current(built, [source, tmp_path / "absent"])
    os.utime(source, (300, 300))
    assert not is_current(built, [source])


def test_labels_give_binary_runs_no_class_options():
    assert Labels().train_arguments() == [] and Labels().bench_arguments() == []
    assert CAMVID.bench_arguments() == ["--ignore-index", "11", "--mask-encoding", "index"]
    assert CAMVID.train_arguments()[:6] == ["--num-classes", "11", "--ignore-index", "11",
                                           "--mask-encoding", "index"]
    with pytest.raises(ValueError, match="num_classes"):
        Labels(0)
    with pytest.raises(ValueError, match="class_names"):
        Labels(3, None, ("a", "b"))


def _labelled(folder):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    return folder


def test_matrix_folders_take_a_held_out_folder_as_it_is(tmp_path):
    train, val = _labelled(tmp_path / "train"), _labelled(tmp_path / "val")
    assert matrix_folders(train, tmp_path / "work", test_data=val) == {"train": train, "test": val}
    assert not (tmp_path / "work").exists()  # no split written
    with pytest.raises(ValueError, match="--test-data must be held out"):
        matrix_folders(train, tmp_path / "work", test_data=train)
    with pytest.raises(ValueError, match="--test-data must be a folder with images/ and masks/"):
        matrix_folders(train, tmp_path / "work", test_data=tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--test-data", "{train}"], "--test-data must be held out"),
    (["--image-size", "128", "160", "3"], "--image-size"),
    (["--num-classes", "3", "--class-names", "a"], "class_names"),
])
def test_bad_matrix_options_are_refused_in_one_line(tmp_path, capsys, argv, message):
    train = _labelled(tmp_path / "train")
    argv = [arg.format(train=train) for arg in argv]
    with pytest.raises(SystemExit) as stopped:
        int8_matrix.main(["--data", str(train), "--work", str(tmp_path / "work")] + argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err
