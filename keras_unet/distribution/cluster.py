"""Which process of which cluster this is: `Cluster` and `resolve_cluster`, from the options
of `keras-unet train` and, for values not given, from the environment a launcher sets (see
`keras_unet.distribution` for the variables read). Pure Python: nothing is started here.

Example:
```python
from keras_unet.distribution import resolve_cluster

resolve_cluster("10.0.0.1:1234", num_processes=2, process_id=1).is_chief   # False
```
"""

import dataclasses
import os

# JAX's own choice of port under Slurm (jax/_src/clusters/slurm_cluster.py), so that two jobs
# sharing a node do not pick the same one.
SLURM_PORT_BASE = 65535 - 2**12 + 1


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

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    source: str = "options"
    num_devices: int | None = None
    local_devices: int | None = None

    @property
    def is_chief(self) -> bool:
        return self.process_id == 0

    @property
    def multi_process(self) -> bool:
        return self.num_processes > 1

    def describe(self) -> str:
        """One line: `process 0 of 2 (coordinator 10.0.0.1:1234, from Slurm), 4 devices`."""
        where = (f"process {self.process_id} of {self.num_processes} (coordinator "
                 f"{self.coordinator}, from {self.source})" if self.multi_process else "1 process")
        if self.num_devices is not None:
            where += f", {self.num_devices} device(s), {self.local_devices} here"
        return where


def first_slurm_node(node_list: str) -> str:
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


def resolve_cluster(coordinator: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None, environ: dict | None = None) -> "Cluster":
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
