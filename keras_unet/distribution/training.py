"""What a training run on several devices needs beyond the cluster: the strategy an option
names, the checks that the global batch splits over the devices, validation batches that do,
and a resume in which process 0 hands its checkpoint to the others.

`--strategy` takes `none` (one device), `mirrored` (TensorFlow's `MirroredStrategy` over the
devices of one machine) or `data-parallel` (`keras.distribution.DataParallel` over the devices
of one or several machines, JAX backend; see `keras_unet.distribution`).

Example:
```python
from keras_unet.distribution.training import cluster_for_strategy, start_cluster

cluster = cluster_for_strategy("data-parallel", "10.0.0.1:1234", 2, 0)   # JAX backend
cluster = start_cluster(cluster, batch_size=8, timeout=120)               # waits for process 1
```
"""

from collections.abc import Callable

from keras_unet.distribution.cluster import Cluster, resolve_cluster
from keras_unet.distribution.processes import initialize, local_only, on_chief

def cluster_for_strategy(strategy: str, coordinator: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> Cluster | None:
    """The `Cluster` of `--strategy data-parallel` (None for the other strategies), after
    checking that the strategy, the Keras backend and the cluster options fit together;
    `ValueError` naming the option otherwise. Nothing is started.

    Example:
    ```python
    cluster_for_strategy("none")                       # None
    cluster_for_strategy("none", process_id=1)         # ValueError: --process-id is for ...
    ```
    """
    import keras

    given = [f"--{name.replace('_', '-')}" for name, value in (
        ("coordinator", coordinator), ("num_processes", num_processes), ("process_id", process_id))
        if value is not None]
    backend = keras.backend.backend()
    if strategy != "data-parallel":
        if given:
            raise ValueError(f"{given[0]} is for --strategy data-parallel (several processes); "
                             f"received --strategy {strategy}")
        if strategy == "mirrored" and backend != "tensorflow":
            raise ValueError("--strategy mirrored is TensorFlow's tf.distribute.MirroredStrategy and "
                             f"needs KERAS_BACKEND=tensorflow (this process runs {backend!r}); on "
                             "JAX use --strategy data-parallel")
        return None
    cluster = resolve_cluster(coordinator, num_processes, process_id)
    if backend != "jax":
        raise ValueError("--strategy data-parallel needs the JAX backend (run it with "
                         f"KERAS_BACKEND=jax; this process runs {backend!r}); on "
                         "TensorFlow, --strategy mirrored uses every device of one machine")
    return cluster


def start_cluster(cluster: Cluster, batch_size: int, timeout: float) -> Cluster:
    """Start the data-parallel runtime (`initialize`), check that `batch_size`, the global
    batch, splits over its devices, and say so in one line. Before any JAX computation, on
    every process."""
    cluster = initialize(cluster, timeout=timeout)
    check_global_batch(batch_size, cluster)
    print(f"data-parallel: {cluster.describe()}; global batch {batch_size}, "
          f"{batch_size // cluster.num_devices} per device")
    return cluster


def tf_strategy(name: str) -> "tf.distribute.Strategy":  # noqa: F821
    """The tf.distribute strategy of `--strategy none` or `mirrored` (for data-parallel, the
    default one: keras.distribution, set by `start_cluster`, does that work). Mirrored says
    how many replicas it trains on."""
    import tensorflow as tf

    if name != "mirrored":
        return tf.distribute.get_strategy()
    strategy = tf.distribute.MirroredStrategy()
    print(f"{name} strategy: training on {strategy.num_replicas_in_sync} replica(s)")
    return strategy


def check_global_batch(batch_size: int, cluster: Cluster) -> None:
    """--batch-size is the global batch: every device must get an equal share of it.

    Example:
    ```python
    check_global_batch(6, cluster)   # 4 devices: ValueError ... e.g. --batch-size 8
    ```
    """
    devices = cluster.num_devices
    if batch_size % devices:
        larger = -(-batch_size // devices) * devices
        raise ValueError(
            f"--batch-size {batch_size} does not split evenly over the {devices} devices of this "
            f"data-parallel run ({cluster.num_processes} process(es)); expected a multiple of "
            f"{devices}, e.g. --batch-size {larger}"
        )


def validation_batch_size(count: int, batch_size: int, devices: int) -> int:
    """The batch size for fit's validation under data-parallel: a multiple of `devices`, at
    most `batch_size` (or `devices`), that leaves the fewest of `count` images out (every
    device must get an equal share of every batch); among equals, the largest.

    Example:
    ```python
    validation_batch_size(67, 8, 2)   # 6: 66 of 67 images in 11 batches (8 would leave out 3)
    ```
    """
    sizes = range(devices, max(devices, batch_size - batch_size % devices) + 1, devices)
    return min(sizes, key=lambda size: (count % size, -size))


def check_training_batches(train: "tf.data.Dataset", batch_size: int) -> None:  # noqa: F821
    """Data-parallel steps take whole global batches only: at least one must be there."""
    if not int(train.cardinality()):
        raise ValueError(f"--batch-size {batch_size} is more than the training images; "
                         "data-parallel steps take whole batches only")


def validation_for_fit(val: "tf.data.Dataset", batch_size: int, cluster: Cluster,  # noqa: F821
                       scored_in: str = "metrics.json") -> "tf.data.Dataset":  # noqa: F821
    """`val` rebatched so that every batch splits over the devices (`validation_batch_size`);
    process 0 says what each epoch's validation leaves out, and that `scored_in` (where the
    best model is scored after training) scores every image."""
    count = sum(int(batch[0].shape[0]) for batch in val)
    size = validation_batch_size(count, batch_size, cluster.num_devices)
    kept = count - count % size
    if not kept:
        raise ValueError(
            f"the validation set has {count} image(s), fewer than the {cluster.num_devices} devices "
            "of this data-parallel run, which must each get a share; raise --val-split or give a "
            "larger --val-data"
        )
    if kept < count and cluster.is_chief:
        print(f"note: each epoch's validation scores {kept} of the {count} validation images "
              f"(batches of {size}, which split evenly over {cluster.num_devices} devices); "
              f"{scored_in} scores all {count}")
    return val.unbatch().batch(size, drop_remainder=True)


def resume_from_chief(model: "keras.Model", cluster: Cluster,  # noqa: F821
                      load: Callable[[], "keras.Model"], out: str) -> None:  # noqa: F821
    """Data-parallel resume: process 0 loads the checkpoint (`load()`, under `local_only`),
    and every process takes its weights and optimizer state into `model` (the other machines
    need no copy of the run folder `out`, which messages name).

    Raises:
        ValueError: the checkpoint does not hold the variables of `model`.
    """
    import numpy as np

    model.optimizer.build(model.trainable_variables)
    variables = list(model.variables) + list(model.optimizer.variables)
    like = [np.asarray(variable.value) for variable in variables]

    def read():
        with local_only():
            saved = load()
            values = [np.asarray(v.value) for v in list(saved.variables) + list(saved.optimizer.variables)]
        if [v.shape for v in values] != [v.shape for v in like]:
            raise ValueError(
                f"--out {out!r}: last.keras does not hold the variables of the model these "
                "options build, so the run cannot resume. Choose a new --out to start again."
            )
        return [value.astype(ref.dtype) for value, ref in zip(values, like)]

    for variable, value in zip(variables, on_chief(cluster, read, like)):
        variable.assign(value)
