"""Data-parallel training on every device of one or several machines, with Keras 3's own
`keras.distribution` on the JAX backend (`keras-unet train --strategy data-parallel`).

Three jobs, one module each: find out which process of which cluster this is (`cluster`);
start JAX's multi-process runtime, set `keras.distribution.DataParallel` over all devices, and
let one process (the chief, process 0) do the writing (`processes`); and what a training run
needs on top: the global batch, validation batches that split over the devices, a resume from
process 0's checkpoint (`training`).

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

from keras_unet.distribution.cluster import SLURM_PORT_BASE, Cluster, first_slurm_node, resolve_cluster
from keras_unet.distribution.processes import (SHUTDOWN_TIMEOUT_S, OtherProcessFailed, broadcast_from_chief,
                                               everywhere, initialize, local_only, on_chief,
                                               weights_fingerprint)

__all__ = ["SHUTDOWN_TIMEOUT_S", "SLURM_PORT_BASE", "Cluster", "OtherProcessFailed", "broadcast_from_chief",
           "everywhere", "first_slurm_node", "initialize", "local_only", "on_chief", "resolve_cluster",
           "weights_fingerprint"]
