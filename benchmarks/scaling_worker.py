"""One worker process of the data-parallel scaling benchmark (`keras_unet.benchmarks.scaling`).

The driver starts it as `python -m keras_unet.benchmarks.scaling --worker ...`, pinned to one
core: it joins the cluster, trains the timed steps, times the gradient all-reduce on its own,
and writes what it measured as JSON for the driver to combine.
"""

import json
import os
import time


def run_worker(args) -> int:
    """One worker: trains `args.steps` data-parallel steps, times them and one all-reduce, and
    writes its result dict to `args.result` (JSON). Returns the exit status."""
    import numpy as np

    from keras_unet import distribution

    cluster = distribution.resolve_cluster(
        args.coordinator if args.num_processes > 1 else None, args.num_processes, args.process_id)
    cluster = distribution.initialize(cluster, timeout=300)
    import jax
    import keras

    import keras_unet
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path

    keras.utils.set_random_seed(0)
    global_batch = args.per_process_batch * cluster.num_processes
    dataset = load_dataset(args.data or nuclei_path(), image_size=(args.image_size, args.image_size),
                           channels=3, batch_size=global_batch, augment=True, shuffle=True, seed=0,
                           drop_remainder=True)
    started = time.perf_counter()
    model = keras_unet.UNet(input_shape=(args.image_size, args.image_size, 3), filters=args.filters,
                            depth=args.depth)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras_unet.losses.get_loss("bce_dice"),
                  metrics=keras_unet.metrics.get_metrics(1))
    build_s = time.perf_counter() - started
    ends, cpu = [], []

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step (JAX dispatches asynchronously)
            ends.append(time.perf_counter())
            cpu.append(time.process_time())  # CPU time of all this process's threads

    started = time.perf_counter()
    model.fit(dataset.repeat(), steps_per_epoch=args.warmup + args.steps, epochs=1, verbose=0,
              callbacks=[StepClock()])
    fit_s = time.perf_counter() - started
    first = max(args.warmup - 1, 0)
    steps, cpu_steps = np.diff(ends[first:]), np.diff(cpu[first:])

    # The gradients' all-reduce on its own, one float32 per trainable parameter per device:
    # as the training step sends them (one tensor per variable; XLA on CPU hands Gloo one
    # tensor at a time) and as one flat buffer (what bucketing them would cost).
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    params = int(sum(np.prod(shape) for shape in shapes))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    per_device = jax.local_device_count()

    def time_allreduce(shapes):
        gradients = [jax.make_array_from_process_local_data(spread, np.ones((per_device, *shape), np.float32))
                     for shape in shapes]
        reduce = jax.jit(lambda xs: [x.sum(axis=0) for x in xs], out_shardings=replicated)
        times = []
        for i in range(2 + args.allreduce_runs):
            start = time.perf_counter()
            jax.block_until_ready(reduce(gradients))
            if i >= 2:
                times.append(time.perf_counter() - start)
        return times

    result = {
        "process_id": cluster.process_id, "num_processes": cluster.num_processes,
        "devices": cluster.num_devices, "params": params, "tensors": len(shapes),
        "global_batch": global_batch, "build_s": build_s, "fit_s": fit_s,
        "step_times_s": [float(t) for t in steps], "step_cpu_s": [float(t) for t in cpu_steps],
        "allreduce_times_s": time_allreduce(shapes),
        "allreduce_flat_times_s": time_allreduce([(params,)]),
        "affinity": sorted(os.sched_getaffinity(0)),
    }
    with open(args.result, "w") as f:
        json.dump(result, f)
    return 0
