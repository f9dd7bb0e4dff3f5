"""Data-parallel training on every device of one or several machines, with Keras 3's own
`keras.distribution` on the JAX backend (`keras-unet train --strategy data-parallel`).

One job: find out which process of which cluster this is, start JAX's multi-process runtime,
set `keras.distribution.DataParallel` over all devices, and give the training command what it
needs to let one process (the chief, process 0) do the writing.

Why not TensorFlow's `MultiWorkerMirroredStrategy`: with Keras 3, `model.fit` under it fails at
the first step on more than one worker (`Attempt to convert a value (PerReplica:{...})`,
keras-team/keras#20585, tensorflow/tensorflow#72388). Keras 3's distribution API works.

How the work is split (`DataParallel`, `auto_shard_dataset=True`): every process builds the
same `tf.data` pipeline (same files, same seeded shuffle and augmentation) and Keras keeps, of
each global batch, the slice of this process (`dataset.rebatch(batch / processes)
.shard(processes, process_id)`). So the global batch is the `--batch-size` asked for, and the
steps are those of one device on the same batches: JAX computes the loss over the global batch
and all-reduces the gradients. Weights are replicated: every process holds all of them.

Where the cluster comes from: the options first; values not given come from the first of
these that the environment holds:

| value | option | Keras | Slurm (`srun`) | `torchrun`-style launchers |
|---|---|---|---|---|
| coordinator `HOST:PORT` | `--coordinator` | `KERAS_DISTRIBUTION_JOB_ADDRESSES` (its first address) | first node of `SLURM_STEP_NODELIST`, port `61440 + SLURM_JOB_ID % 4096` (as JAX picks it) | `MASTER_ADDR:MASTER_PORT` |
| number of processes | `--num-processes` | `KERAS_DISTRIBUTION_NUM_PROCESSES` | `SLURM_NTASKS` | `WORLD_SIZE` |
| this process | `--process-id` | `KERAS_DISTRIBUTION_PROCESS_ID` | `SLURM_PROCID` | `RANK` |

Example:
```python
from keras_unet import distribution

cluster = distribution.resolve_cluster("10.0.0.1:1234", num_processes=2, process_id=1)
cluster = distribution.initialize(cluster, timeout=120)   # JAX backend; waits for the others
if cluster.is_chief:
    ...   # write files
```
"""

import contextlib
import dataclasses
import os
import socket
import sys
import threading

# JAX's own choice of port under Slurm (jax/_src/clusters/slurm_cluster.py), so that two jobs
# sharing a node do not pick the same one.
SLURM_PORT_BASE = 65535 - 2**12 + 1
# How long a process that finished waits at exit for the others (process 0 evaluates the best
# model alone after training, which may take minutes on a large validation set). JAX's default
# of 300 s would kill it mid-evaluation.
SHUTDOWN_TIMEOUT_S = 3600


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Which process of how many, and where process 0 listens.

    Attributes:
        coordinator: `HOST:PORT` of process 0, None for a single process.
        num_processes: processes taking part (one per machine, usually).
        process_id: this one, in `[0, num_processes)`; 0 is the chief, which writes the files.
        source: where the values came from, for messages (`"options"`, `"Slurm"`, ...).
        num_devices: devices over all processes (known after `initialize`).
        local_devices: devices of this process (known after `initialize`).
    """

    coordinator: str = None
    num_processes: int = 1
    process_id: int = 0
    source: str = "options"
    num_devices: int = None
    local_devices: int = None

    @property
    def is_chief(self):
        return self.process_id == 0

    @property
    def multi_process(self):
        return self.num_processes > 1

    def describe(self):
        """One line: `process 0 of 2 (coordinator 10.0.0.1:1234, from Slurm), 4 devices`."""
        where = (f"process {self.process_id} of {self.num_processes} (coordinator "
                 f"{self.coordinator}, from {self.source})" if self.multi_process else "1 process")
        if self.num_devices is not None:
            where += f", {self.num_devices} device(s), {self.local_devices} here"
        return where


def first_slurm_node(node_list):
    """The first host name of a Slurm node list (`node[007-010,012],gpu1` -> `node007`).

    Example:
    ```python
    first_slurm_node("node[007-010,012],gpu1")   # "node007"
    ```
    """
    cut = next((i for i, ch in enumerate(node_list) if ch in ",["), len(node_list))
    if cut == len(node_list) or node_list[cut] == ",":
        return node_list[:cut]
    inside = node_list[cut + 1:]
    end = next((i for i, ch in enumerate(inside) if ch in ",-]"), len(inside))
    return node_list[:cut] + inside[:end]


def _from_keras(env):
    if not any(k in env for k in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                                  "KERAS_DISTRIBUTION_PROCESS_ID")):
        return None
    addresses = env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    return ("KERAS_DISTRIBUTION_* variables",
            (addresses.split(",")[0].strip() or None) if addresses else None,
            ("KERAS_DISTRIBUTION_NUM_PROCESSES", env.get("KERAS_DISTRIBUTION_NUM_PROCESSES")),
            ("KERAS_DISTRIBUTION_PROCESS_ID", env.get("KERAS_DISTRIBUTION_PROCESS_ID")))


def _from_slurm(env):
    if not all(k in env for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NODELIST")):
        return None
    job = env["SLURM_JOB_ID"]
    port = SLURM_PORT_BASE + int(job) % 2**12 if job.isdigit() else None
    host = first_slurm_node(env["SLURM_STEP_NODELIST"])
    return ("Slurm", f"{host}:{port}" if host and port else None,
            ("SLURM_NTASKS", env["SLURM_NTASKS"]), ("SLURM_PROCID", env["SLURM_PROCID"]))


def _from_torchrun(env):
    if not all(k in env for k in ("WORLD_SIZE", "RANK")):
        return None
    address = (f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
               if env.get("MASTER_ADDR") and env.get("MASTER_PORT") else None)
    return ("WORLD_SIZE/RANK/MASTER_ADDR/MASTER_PORT", address,
            ("WORLD_SIZE", env["WORLD_SIZE"]), ("RANK", env["RANK"]))


def _env_int(name, text, low):
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low:
        raise ValueError(f"the environment variable {name}={text!r} is not an integer >= {low}")
    return value


def resolve_cluster(coordinator=None, num_processes=None, process_id=None, environ=None):
    """The `Cluster` from the options, completed from the environment (see the module
    docstring for the variables read); raises `ValueError` naming the option at fault.

    Args:
        coordinator: `HOST:PORT` of process 0, or None.
        num_processes: number of processes, or None.
        process_id: this process, or None.
        environ: the environment to read (default `os.environ`).

    Example:
    ```python
    resolve_cluster()                                  # one process, all local devices
    resolve_cluster("10.0.0.1:1234", 2, 1)             # process 1 of 2
    resolve_cluster(environ={"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
                             "SLURM_STEP_NODELIST": "node[1-2]"})   # node1:61517, 2, 1
    ```
    """
    env = os.environ if environ is None else environ
    source = "options"
    if None in (coordinator, num_processes, process_id):
        found = _from_keras(env) or _from_slurm(env) or _from_torchrun(env)
        if found is not None:
            name, env_coordinator, (count_name, count), (id_name, index) = found
            if coordinator is None:
                coordinator = env_coordinator
            if num_processes is None and count is not None:
                num_processes = _env_int(count_name, count, 1)
            if process_id is None and index is not None:
                process_id = _env_int(id_name, index, 0)
            source = name
    if num_processes is None:
        if coordinator is not None:
            raise ValueError(f"--coordinator {coordinator} needs --num-processes N, the number of "
                             "processes (machines) taking part")
        if process_id not in (None, 0):
            raise ValueError(f"--process-id {process_id} needs --num-processes N and --coordinator "
                             "HOST:PORT")
        return Cluster(source=source)
    if num_processes == 1:
        if process_id not in (None, 0):
            raise ValueError(f"--process-id {process_id} is out of range for --num-processes 1: "
                             "expected 0")
        return Cluster(coordinator=coordinator, source=source)
    if coordinator is None:
        raise ValueError(f"--num-processes {num_processes} needs --coordinator HOST:PORT, the "
                         "address where process 0 listens (or KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    if process_id is None:
        raise ValueError(f"--num-processes {num_processes} needs --process-id I, this process's "
                         f"number from 0 (on the coordinator's host) to {num_processes - 1}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is out of range for --num-processes "
                         f"{num_processes}: expected 0 to {num_processes - 1}")
    return Cluster(coordinator=coordinator, num_processes=num_processes, process_id=process_id,
                   source=source)


def _answers(coordinator, timeout=2.0):
    host, _, port = coordinator.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _check_port_free(coordinator):
    """On process 0: the coordinator's port must be free here (JAX binds it on every address)."""
    port = int(coordinator.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # A port left in TIME_WAIT by an earlier run is free to listen on; a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise ValueError(f"--coordinator {coordinator}: process 0 cannot listen on port {port} "
                             f"of this host ({error.strerror}); choose a free port") from None


def _give_up(cluster, timeout):
    """Called by the watchdog when the processes did not all meet in `timeout` seconds."""
    if cluster.is_chief:
        others = "1" if cluster.num_processes == 2 else f"1 to {cluster.num_processes - 1}"
        reason = (f"not all {cluster.num_processes} processes joined process 0 within {timeout:g} s; "
                  f"start the others with --coordinator {cluster.coordinator} --num-processes "
                  f"{cluster.num_processes} --process-id {others} (one each)")
    elif _answers(cluster.coordinator):
        reason = (f"process 0 answers there, but not all {cluster.num_processes} processes joined "
                  f"within {timeout:g} s; check that every process has --num-processes "
                  f"{cluster.num_processes} and its own --process-id")
    else:
        reason = (f"no coordinator answered there within {timeout:g} s; start process 0 "
                  "(--process-id 0) on that host, and check the address and that the port is "
                  "open between the machines")
    print(f"keras-unet train: error: --coordinator {cluster.coordinator}: {reason} "
          "(--coordinator-timeout sets the wait)", file=sys.stderr, flush=True)
    # JAX is blocked in native code that no Python exception reaches; it would abort later
    # with a fatal log. Exit status 2: the options (or the launch) need fixing.
    os._exit(2)


def initialize(cluster, timeout=120):
    """Start JAX's multi-process runtime (when there are several processes) and make
    `keras.distribution.DataParallel` over every device of every process the distribution.

    Needs the JAX backend, and must run before any JAX computation. Returns the cluster with
    `num_devices` and `local_devices` filled in. Processes that do not all meet within
    `timeout` seconds end with a one-line error and exit status 2 (not a hang, and not JAX's
    abort after 5 minutes).

    `keras.distribution.initialize` is `jax.distributed.initialize` without its timeouts
    (and a shared seed, which `keras-unet train` sets itself), so JAX's is called here with
    them. On CPUs the cross-process collectives are Gloo's (JAX has none of its own there).

    Args:
        cluster: a `Cluster` from `resolve_cluster`.
        timeout: seconds to wait for all processes to join.

    Example:
    ```python
    cluster = initialize(resolve_cluster("127.0.0.1:23461", 2, 0), timeout=60)
    cluster.num_devices   # 2 with one CPU device per process
    ```
    """
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError("--strategy data-parallel needs the JAX backend (run with KERAS_BACKEND=jax); "
                         f"this process runs Keras on {keras.backend.backend()!r}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if cluster.multi_process:
        if cluster.is_chief:
            _check_port_free(cluster.coordinator)
        watchdog = threading.Timer(timeout, _give_up, (cluster, timeout))
        watchdog.daemon = True
        watchdog.start()
        try:
            jax.distributed.initialize(
                coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
                process_id=cluster.process_id, initialization_timeout=int(timeout) + 60,
                shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
            # All processes registered; the first collective makes sure they can talk
            # (Gloo connects here).
            broadcast_from_chief(0)
        finally:
            watchdog.cancel()
    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return dataclasses.replace(cluster, num_devices=len(devices),
                               local_devices=jax.local_device_count())


def broadcast_from_chief(value):
    """`value` (a number or a pytree of arrays) as process 0 has it, on every process.

    Every process must call it, with values of the same shapes; with one process it returns
    `value` as it is.

    Example:
    ```python
    initial_epoch = int(broadcast_from_chief(initial_epoch))
    ```
    """
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(value)


class OtherProcessFailed(RuntimeError):
    """Raised on the processes where a step went well when it failed on another one."""


def on_chief(cluster, work, like):
    """Run `work()` on process 0 only and give its result to every process.

    Args:
        cluster: the `Cluster`.
        work: what process 0 computes (reading the run folder, loading a checkpoint).
        like: a value of the result's shapes and dtypes (a number or a pytree of numpy
            arrays), what the other processes contribute to the broadcast.

    Returns:
        The result of `work()` on process 0, on every process.

    Raises:
        On process 0, the error `work()` raised; on the others `OtherProcessFailed`, so that no
        process is left waiting for a step that will not come.

    Example:
    ```python
    initial_epoch = on_chief(cluster, lambda: check_resume(args, state), like=0)
    ```
    """
    if not cluster.multi_process:
        return work()
    import numpy as np

    result, failure = like, None
    if cluster.is_chief:
        try:
            result = work()
        except BaseException as error:  # noqa: BLE001 - re-raised below, after telling the others
            failure = error
    if not int(broadcast_from_chief(np.int32(failure is None))):
        if failure is not None:
            raise failure
        raise OtherProcessFailed(f"process 0 stopped with an error (its output says which); process "
                          f"{cluster.process_id} stops too")
    return broadcast_from_chief(result)


def everywhere(cluster, work):
    """Run `work()` on every process; if it fails on any, raise on all of them.

    For steps whose failure on one process only (its copy of the data is missing, say)
    would leave the others waiting at the next collective step until JAX gives up.

    Returns:
        The result of `work()` on this process.

    Raises:
        The error `work()` raised here, or `OtherProcessFailed` naming the
        processes where it failed.

    Example:
    ```python
    train, val = everywhere(cluster, lambda: load_data(args))
    ```
    """
    if not cluster.multi_process:
        return work()
    import numpy as np
    from jax.experimental import multihost_utils

    result, failure = None, None
    try:
        result = work()
    except BaseException as error:  # noqa: BLE001 - re-raised below, after telling the others
        failure = error
    succeeded = np.asarray(multihost_utils.process_allgather(np.int32(failure is None))).ravel()
    if failure is not None:
        raise failure
    failed = [str(i) for i, ok in enumerate(succeeded) if not ok]
    if failed:
        raise OtherProcessFailed(f"process(es) {', '.join(failed)} stopped with an error (their output "
                          f"says which); process {cluster.process_id} stops too")
    return result


def weights_fingerprint(model):
    """A short hash of all of `model`'s weights: equal on every process of a data-parallel
    run that trained in lockstep.

    Example:
    ```python
    print(f"weights {weights_fingerprint(model)}")   # weights 3fa2c91b0d6e7a15
    ```
    """
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight.value)).tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def local_only():
    """No distribution inside: variables made there live on this process's devices only.

    For what one process does alone under a multi-process distribution (saving a
    checkpoint, loading one, evaluating): Keras would otherwise place every new variable on
    every process's devices, a step that waits for all processes (JAX checks the values are
    equal) and so never ends when only one takes it.

    Example:
    ```python
    if cluster.is_chief:
        with local_only():
            model.save("last.keras")
    ```
    """
    import keras

    saved = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(saved)
