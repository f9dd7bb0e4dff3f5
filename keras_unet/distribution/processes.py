"""JAX's multi-process runtime under `keras.distribution.DataParallel`: start it, and the
steps one process takes for all (`on_chief`), all take together (`everywhere`, a broadcast) or
one takes alone (`local_only`). JAX is imported inside the functions.

Example:
```python
from keras_unet.distribution import initialize, on_chief, resolve_cluster

cluster = initialize(resolve_cluster("127.0.0.1:23461", 2, 0), timeout=60)
epoch = on_chief(cluster, lambda: 3, like=0)   # 3 on every process
```
"""

import contextlib
import dataclasses
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from keras_unet.distribution.cluster import Cluster

# How long a process that finished waits at exit for the others (process 0 evaluates the best
# model alone after training, which may take minutes on a large validation set). JAX's default
# of 300 s would kill it mid-evaluation.
SHUTDOWN_TIMEOUT_S = 3600


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


def initialize(cluster: Cluster, timeout: float = 120) -> Cluster:
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


def broadcast_from_chief(value: Any) -> Any:
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


def on_chief(cluster: Cluster | None, work: Callable[[], Any], like: Any) -> Any:
    """Run `work()` on process 0 only and give its result to every process.

    Args:
        cluster: the `Cluster`; None (or one process): `work()` runs here, as it is.
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
    epochs_done = on_chief(cluster, lambda: folder.epochs_completed(), like=0)
    ```
    """
    if cluster is None or not cluster.multi_process:
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


def everywhere(cluster: Cluster | None, work: Callable[[], Any]) -> Any:
    """Run `work()` on every process; if it fails on any, raise on all of them.

    For steps whose failure on one process only (its copy of the data is missing, say)
    would leave the others waiting at the next collective step until JAX gives up.

    Args:
        cluster: the `Cluster`; None (or one process): `work()` runs here, as it is.
        work: what every process computes (building its data pipeline, say).

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
    if cluster is None or not cluster.multi_process:
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


def weights_fingerprint(model: "keras.Model") -> str:  # noqa: F821
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
def local_only() -> Iterator[None]:
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
