"""Training on several devices and machines: `keras_unet.distribution` and `keras-unet train
--strategy data-parallel | mirrored`.

The slow tests start real processes: two data-parallel processes on loopback (JAX backend,
Gloo), checked against one process trained on the same global batches; TensorFlow's
MirroredStrategy on two logical CPUs, checked against one replica; and processes whose
partner never comes, which must fail in one line after the wait they were given.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_unet import cli
from keras_unet.console.arguments import host_port
from keras_unet.datasets import nuclei_path
from keras_unet.distribution import Cluster, first_slurm_node, resolve_cluster
from keras_unet.distribution.training import check_global_batch, validation_batch_size

# -- the cluster, from options and launchers' environment variables --------------------------


@pytest.mark.parametrize("options, environ, expected", [
    ((None, None, None), {}, (None, 1, 0, "options")),
    (("10.0.0.1:1234", 2, 1), {}, ("10.0.0.1:1234", 2, 1, "options")),
    ((None, None, None), {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:2345",
                          "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"},
     ("10.0.0.1:1234", 2, 1, "KERAS_DISTRIBUTION_* variables")),
    ((None, None, None), {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
                          "SLURM_STEP_NODELIST": "gpu[07-10]"},
     ("gpu07:61517", 4, 3, "Slurm")),
    ((None, None, None), {"WORLD_SIZE": "3", "RANK": "2", "MASTER_ADDR": "head", "MASTER_PORT": "29500"},
     ("head:29500", 3, 2, "WORLD_SIZE/RANK/MASTER_ADDR/MASTER_PORT")),
    # An option wins over the environment; Keras' variables over Slurm's.
    (("other:9", None, 0), {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
                            "SLURM_STEP_NODELIST": "n1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"},
     ("other:9", 2, 0, "KERAS_DISTRIBUTION_* variables")),
])
def test_the_cluster_comes_from_options_then_the_environment(options, environ, expected):
    cluster = resolve_cluster(*options, environ=environ)
    assert (cluster.coordinator, cluster.num_processes, cluster.process_id, cluster.source) == expected
    assert cluster.is_chief == (expected[2] == 0)


@pytest.mark.parametrize("options, environ, culprit", [
    ((None, 2, 0), {}, "--num-processes 2 needs --coordinator"),
    (("h:1", 2, None), {}, "--num-processes 2 needs --process-id"),
    (("h:1", 2, 2), {}, "--process-id 2 is out of range for --num-processes 2: expected 0 to 1"),
    (("h:1", None, None), {}, "--coordinator h:1 needs --num-processes"),
    ((None, None, 1), {}, "--process-id 1 needs --num-processes"),
    ((None, 1, 1), {}, "--process-id 1 is out of range for --num-processes 1"),
    ((None, None, None), {"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two'"),
    ((None, None, None), {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "2", "SLURM_PROCID": "-1",
                          "SLURM_STEP_NODELIST": "n1"}, "SLURM_PROCID='-1'"),
])
def test_an_incomplete_cluster_is_refused_by_name(options, environ, culprit):
    with pytest.raises(ValueError, match=culprit.replace("(", r"\(").replace(")", r"\)")):
        resolve_cluster(*options, environ=environ)


@pytest.mark.parametrize("nodes, first", [("n1", "n1"), ("n1,n2", "n1"), ("node[007-010,012]", "node007"),
                                          ("node[3,5]", "node3"), ("gpu[1-2],cpu9", "gpu1")])
def test_the_coordinator_under_slurm_is_the_first_node(nodes, first):
    assert first_slurm_node(nodes) == first


def test_a_coordinator_must_be_host_and_port():
    assert host_port("10.0.0.1:1234") == "10.0.0.1:1234"
    assert host_port("[::1]:80") == "[::1]:80"
    for bad in ("10.0.0.1", ":1234", "h:0", "h:65536", "h:x", "::1:80"):
        with pytest.raises(Exception, match="HOST:PORT"):
            host_port(bad)


@pytest.mark.parametrize("count, batch, devices, size", [
    (67, 8, 2, 6),    # 66 of 67 images; 8 would leave 3 out
    (64, 8, 2, 8),    # no remainder: the full batch
    (5, 8, 4, 4),
    (3, 2, 4, 4),     # a batch smaller than the devices still gives each one image
])
def test_validation_batches_split_over_the_devices_and_leave_out_the_fewest(count, batch, devices, size):
    assert validation_batch_size(count, batch, devices) == size
    assert size % devices == 0


def test_the_global_batch_must_split_over_the_devices():
    check_global_batch(8, Cluster(num_processes=2, process_id=0, num_devices=4))
    with pytest.raises(ValueError, match="--batch-size 6 .* multiple of 4, e.g. --batch-size 8"):
        check_global_batch(6, Cluster(num_processes=2, process_id=0, num_devices=4))


def test_the_all_reduce_on_paper():
    from keras_unet.benchmarks.scaling import link_speed_for_efficiency, ring_allreduce_bytes

    # The seed model's float32 gradients, 124.1 MB; a ring over 8 hosts moves 2 x 7/8 of them.
    assert ring_allreduce_bytes(31_031_745, hosts=8) == pytest.approx(217.22e6, rel=1e-4)
    # 80% efficiency leaves the exchange a quarter of the compute time.
    speed = link_speed_for_efficiency(31_031_745, hosts=8, step_s=1.0)
    assert speed * 0.25 == pytest.approx(ring_allreduce_bytes(31_031_745, hosts=8))
    assert link_speed_for_efficiency(31_031_745, hosts=8, step_s=0.1) == pytest.approx(10 * speed)


def test_multiworker_is_refused_with_the_reason_and_what_to_use(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", "--data", str(nuclei_path()), "--out", str(tmp_path / "run"),
                  "--strategy", "multiworker"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "keras-team/keras#20585" in err and "--strategy data-parallel" in err
    assert not (tmp_path / "run").exists()


# -- real processes ------------------------------------------------------------------------------

TINY = ["--image-size", "16", "--channels", "1", "--filters", "4", "--depth", "1", "--batch-size", "4",
        "--max-images", "20", "--val-split", "0.2", "--seed", "0", "--quiet"]  # fmt: skip
# 20 pairs: 16 training images, 4 global batches of 4 per epoch (none left over, so the
# data-parallel run, which drops incomplete batches, sees the batches of the reference), and
# 4 validation images.


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def jax_env(tmp_path_factory):
    """The environment of a JAX-backend subprocess; the processes share JAX's compilation
    cache, so only the first of them compiles the model's initializers and steps, and XLA
    compiles without its optimisation passes (most of the compile time; every process of a
    test compiles alike, and the tests compare their results, not their speed)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "XLA_FLAGS": "--xla_backend_optimization_level=0"}


def _start(argv, env, log):
    return subprocess.Popen([sys.executable, "-m", "keras_unet.cli", *argv], env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def _run_all(commands, env, logs, timeout_s):
    """Start every command at once; wait for all of them, at most `timeout_s` each; returns
    (exit statuses, outputs). Whatever is still running after that is killed."""
    files = [open(path, "w") for path in logs]
    processes = [_start(argv, env, log) for argv, log in zip(commands, files)]
    try:
        statuses = [process.wait(timeout=timeout_s) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in files:
            log.close()
    return statuses, [open(path).read() for path in logs]


def _weights(path):
    import keras

    import keras_unet  # noqa: F401  (registers the layers for loading)

    model = keras.models.load_model(path)  # on this (TensorFlow) process's backend
    return model.get_weights() + [np.asarray(v) for v in model.optimizer.variables]


def _fingerprint(output):
    lines = [line for line in output.splitlines() if ": weights " in line]
    assert len(lines) == 1, output[-3000:]
    return lines[0].split(": weights ")[1].strip()


@pytest.mark.slow
def test_two_processes_train_in_lockstep_as_one_process_would(tmp_path, jax_env):
    """Two data-parallel processes resume a run that one process began, and train its second
    epoch as that one process does when it resumes it (fresh starts go the same way, minus
    process 0 handing its checkpoint to the other process; one round of two processes is
    what the time budget of the suite allows)."""
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        shutil.copytree(nuclei_path() / sub, data / sub, ignore=lambda folder, names: sorted(names)[20:])
    common = ["train", "--data", str(data), *TINY]
    reference, run = tmp_path / "reference", tmp_path / "run"

    def one_process(epochs):
        statuses, outputs = _run_all([[*common, "--out", str(reference), "--epochs", epochs]],
                                     jax_env, [tmp_path / f"reference{epochs}.log"], timeout_s=120)
        assert statuses == [0], outputs[0][-3000:]

    one_process("1")
    shutil.copytree(reference, run)
    cluster = ["--strategy", "data-parallel", "--coordinator", f"127.0.0.1:{_free_port()}",
               "--num-processes", "2", "--coordinator-timeout", "60", "--epochs", "2"]
    statuses, outputs = _run_all(
        [[*common, *cluster, "--out", str(run), "--process-id", "0"],
         # Process 1 ignores its --out: only process 0 reads and writes the run folder.
         [*common, *cluster, "--out", str(tmp_path / "not_written"), "--process-id", "1"]],
        jax_env, [tmp_path / "process0.log", tmp_path / "process1.log"], timeout_s=180)
    assert statuses == [0, 0], "\n----\n".join(out[-3000:] for out in outputs)
    assert "2 device(s)" in outputs[0] and "global batch 4, 2 per device" in outputs[0]
    assert f"resuming {run} from epoch 1" in outputs[0]
    # Both processes hold the same weights, to the bit.
    assert _fingerprint(outputs[0]) == _fingerprint(outputs[1])
    assert not (tmp_path / "not_written").exists()
    one_process("2")
    # Each process took its half of every global batch (Keras' sharding of the tf.data
    # pipeline), so the step is the one process's step; the resumed run started from the
    # weights and optimizer state that process 0 read, on both processes.
    got, expected = _weights(run / "last.keras"), _weights(reference / "last.keras")
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 2
    assert json.loads((run / "config.json").read_text())["finished"]
    with open(run / "training.csv") as log:
        assert len(log.read().splitlines()) == 3  # header, epoch 0 (one process), epoch 1


@pytest.mark.slow
def test_a_missing_partner_is_a_one_line_error_after_the_wait(tmp_path, jax_env):
    port = _free_port()
    common = ["train", "--data", str(nuclei_path()), *TINY, "--strategy", "data-parallel",
              "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--coordinator-timeout", "2"]
    # Process 1 with no process 0 anywhere; process 0 (on another port) that nobody joins.
    lonely_chief = [*common, "--out", str(tmp_path / "run0"), "--process-id", "0"]
    lonely_chief[lonely_chief.index(f"127.0.0.1:{port}")] = f"127.0.0.1:{_free_port()}"
    statuses, outputs = _run_all(
        [[*common, "--out", str(tmp_path / "run1"), "--process-id", "1"], lonely_chief],
        jax_env, [tmp_path / "worker.log", tmp_path / "chief.log"], timeout_s=60)
    assert statuses == [2, 2], outputs
    for output, says in zip(outputs, ("no coordinator answered", "not all 2 processes joined")):
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("keras-unet train: error: --coordinator"), output
        assert says in lines[0] and "within 2 s" in lines[0]
    assert not (tmp_path / "run0").exists()


MIRRORED_STEP = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_unet

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    masks = (rng.uniform(size=(4, 32, 32, 1)) > 0.6).astype("float32")

    def one_step(strategy, loss):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
            # Plain SGD: the update is the gradient itself (Adam's first step hides its scale).
            model.compile(keras.optimizers.SGD(0.1), keras_unet.losses.get_loss(loss))
        before = [v.numpy() for v in model.trainable_variables]
        batches = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4)
        history = model.fit(batches, epochs=1, verbose=0)
        update = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
        return np.concatenate([u.ravel() for u in update]), history.history["loss"][0]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    for loss in sys.argv[1:]:
        one, one_loss = one_step(tf.distribute.get_strategy(), loss)
        two, two_loss = one_step(mirrored, loss)
        print(loss, float(np.abs(one).max()), float(np.abs(two - one).max()), one_loss, two_loss)
    """
)


@pytest.mark.slow
def test_mirrored_replicas_share_their_gradients_as_one_device_would(tmp_path):
    # Each replica sees 2 of the 4 images; the step must be the step of one device on all 4
    # (keras-team/keras#19891 was replicas that did not share gradients). The region losses
    # needed their TP/FP/FN summed over the replicas: the Dice term alone came out twice
    # too large with 2 replicas.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_STEP, "bce", "dice", "bce_dice"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == ["bce", "dice", "bce_dice"]
    for name, largest, difference, one_loss, two_loss in rows:
        assert float(largest) > 1e-4, name  # the step moved the weights
        assert float(difference) < 1e-4 * float(largest), (name, difference, largest)
        assert float(two_loss) == pytest.approx(float(one_loss), rel=1e-5), name
