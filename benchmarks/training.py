"""Training throughput: `keras_unet.UNet` against the seed's functional U-Net, and how much
faster the `keras_unet.data` input pipeline is than the training step that consumes it.

Three numbers, all measured in one process on the same batch from the same data:

1. `train_ips` of `keras_unet.UNet(input_shape=(128, 128, 3))` and of `seed_unet()`, a plain
   functional re-implementation of the seed tutorial's model (64..1024 filters, four 2x2
   max-poolings, two ReLU 3x3 convolutions per stage, 2x2 stride-2 `Conv2DTranspose`, 1x1
   sigmoid; 31,031,745 parameters), both compiled with the seed's settings (Adam,
   binary cross entropy). Each step is one `train_on_batch` on a batch held in memory, so
   the input pipeline is out of this number. The two models are timed in alternating
   blocks (`keras_unet.benchmarks.timing.time_interleaved`) so that load from other processes on a
   shared machine hits both; images/second is the batch size over the median step time.
   `unet_vs_seed_ratio` = UNet images/s / seed images/s (target >= 0.95).
2. `pipeline_ips`: images/second that `keras_unet.data.load_dataset` (cached, shuffled,
   augmented, batched, prefetched) delivers when nothing consumes it, after one warm-up
   epoch fills the cache. `pipeline_headroom` = pipeline_ips / UNet train_ips (target >= 3).
3. `fit_ips` (optional): `UNet.fit` fed by that pipeline; close to `train_ips` when the
   pipeline is not the bottleneck.

Example:
```python
from keras_unet.benchmarks.training import benchmark_training

result = benchmark_training(steps=10, out="training.json")
result["unet_vs_seed_ratio"], result["pipeline_headroom"]
```
or `python -m keras_unet.benchmarks.training --steps 10 --out training.json`.
"""

import argparse
import json
import sys
import time

import numpy as np

from keras_unet.benchmarks.environment import collect_environment
from keras_unet.benchmarks.report import output_path
from keras_unet.benchmarks.timing import summarize, time_interleaved
from keras_unet.runtime.files import write_text_atomic

SEED_OPTIMIZER = "adam"
SEED_LOSS = "binary_crossentropy"


def seed_unet(input_shape=(128, 128, 3), filters=64, depth=4):
    """The seed tutorial's U-Net as a plain functional model (the baseline).

    Inputs in [0, 255], scaled by 1/255 inside the model as `keras_unet.UNet` does.

    Args:
        input_shape: `(height, width, channels)`, sides multiples of `2**depth`.
        filters: filters of the first stage (64 in the seed), doubled per stage.
        depth: number of 2x2 max-poolings (4 in the seed).

    Returns:
        An uncompiled `keras.Model`; 31,031,745 parameters with the defaults.

    Example:
    ```python
    model = seed_unet()
    model.count_params()   # 31031745
    ```
    """
    import keras
    from keras import layers

    def conv_pair(x, width):
        x = layers.Conv2D(width, 3, activation="relu", padding="same",
                          kernel_initializer="he_normal")(x)
        return layers.Conv2D(width, 3, activation="relu", padding="same",
                             kernel_initializer="he_normal")(x)

    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    skips = []
    for level in range(depth):
        x = conv_pair(x, filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = conv_pair(x, filters * 2**depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = conv_pair(x, filters * 2**level)
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="seed_unet")


def _pipeline_ips(dataset, batches):
    """Images/second of iterating `batches` batches (the dataset repeats)."""
    iterator = iter(dataset.repeat())
    count = 0
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def benchmark_training(data=None, image_size=(128, 128), channels=3, filters=64, depth=4,
                       batch_size=8, steps=10, warmup=2, rounds=5, pipeline_batches=None,
                       augment=True, measure_fit=True, seed=0, out=None, verbose=True):
    """Measure training images/second of UNet vs the seed model, and the pipeline headroom.

    Args:
        data: folder with `images/` and `masks/` (binary masks); default the shipped
            nuclei set.
        image_size: `(height, width)` of the models and the pipeline.
        channels: image channels.
        filters: first-stage filters of both models (64 = the seed).
        depth: poolings of both models (4 = the seed).
        batch_size: images per training step and per pipeline batch.
        steps: timed training steps per model (split over `rounds`).
        warmup: untimed steps per model first (graph tracing, allocation).
        rounds: alternations between the two models.
        pipeline_batches: batches timed from the pipeline; default one epoch, at least 20.
        augment: time the pipeline with the default `keras_unet.data.Augment`.
        measure_fit: also time `UNet.fit` fed by the pipeline (`fit_ips`).
        seed: seed for the data order, augmentation and weights.
        out: path of a JSON file to write, or None.
        verbose: print a summary.

    Returns:
        dict with `unet`, `seed` (step latency statistics and `train_ips`),
        `unet_vs_seed_ratio`, `pipeline_ips`, `pipeline_headroom`, `fit_ips` (or None),
        `params`, `config` and `environment`.

    Example:
    ```python
    result = benchmark_training(image_size=(32, 32), filters=4, depth=2, steps=2, warmup=1)
    ```
    """
    import keras

    import keras_unet
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path

    data = nuclei_path() if data is None else data
    keras.utils.set_random_seed(seed)
    dataset = load_dataset(data, image_size=tuple(image_size), channels=channels, num_classes=1,
                           batch_size=batch_size, augment=augment, shuffle=True, seed=seed,
                           drop_remainder=True)
    batches_per_epoch = int(dataset.cardinality())
    if batches_per_epoch < 1:
        raise ValueError(
            f"The data set has fewer than batch_size={batch_size} pairs. Received: data='{data}'"
        )
    # One fixed batch for both models: same data, and no pipeline cost in the step time.
    images, masks = (np.asarray(t) for t in next(iter(dataset)))

    shape = tuple(image_size) + (channels,)
    models = {
        "unet": keras_unet.UNet(input_shape=shape, filters=filters, depth=depth),
        "seed": seed_unet(shape, filters=filters, depth=depth),
    }
    for model in models.values():
        model.compile(optimizer=SEED_OPTIMIZER, loss=SEED_LOSS)
    params = {name: int(model.count_params()) for name, model in models.items()}

    def step(model):
        return lambda: model.train_on_batch(images, masks)

    runs = max(int(steps), int(rounds))
    times = time_interleaved({name: step(model) for name, model in models.items()},
                             warmup=warmup, runs=runs, rounds=rounds)
    result = {name: summarize(times[name], batch_size=batch_size) for name in models}
    for name in models:
        result[name]["train_ips"] = result[name].pop("throughput_ips")
    ratio = result["unet"]["train_ips"] / result["seed"]["train_ips"]

    # Pipeline on its own: a warm-up epoch fills the cache, then the steady state is timed.
    for _ in dataset:
        pass
    pipeline_batches = pipeline_batches or max(20, batches_per_epoch)
    pipeline_ips = _pipeline_ips(dataset, pipeline_batches)

    fit_ips = None
    if measure_fit:
        unet = models["unet"]
        fit_steps = max(2, runs)
        feed = dataset.repeat()
        unet.fit(feed, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)  # builds the fit function
        start = time.perf_counter()
        unet.fit(feed, steps_per_epoch=fit_steps, epochs=1, verbose=0, shuffle=False)
        fit_ips = fit_steps * batch_size / (time.perf_counter() - start)

    result.update({
        "unet_vs_seed_ratio": ratio,
        "pipeline_ips": pipeline_ips,
        "pipeline_headroom": pipeline_ips / result["unet"]["train_ips"],
        "fit_ips": fit_ips,
        "params": params,
        "config": {
            "data": str(data), "image_size": list(image_size), "channels": channels,
            "filters": filters, "depth": depth, "batch_size": batch_size, "steps": runs,
            "warmup": warmup, "rounds": rounds, "pipeline_batches": pipeline_batches,
            "augment": bool(augment), "optimizer": SEED_OPTIMIZER, "loss": SEED_LOSS,
            "seed": seed,
        },
        "environment": collect_environment(),
    })
    if verbose:
        print(format_summary(result))
    if out is not None:
        write_text_atomic(output_path(out), json.dumps(result, indent=2))
    return result


def format_summary(result):
    """A short text table of a `benchmark_training` result.

    Example:
    ```python
    print(format_summary(result))
    ```
    """
    lines = [f"{'model':<6} {'params':>12} {'step p50 ms':>12} {'step p90 ms':>12} {'images/s':>9}"]
    for name in ("unet", "seed"):
        row = result[name]
        lines.append(f"{name:<6} {result['params'][name]:>12,} {row['latency_p50_ms']:>12.1f} "
                     f"{row['latency_p90_ms']:>12.1f} {row['train_ips']:>9.2f}")
    lines.append(f"UNet / seed images/s: {result['unet_vs_seed_ratio']:.3f} (target >= 0.95)")
    lines.append(f"input pipeline: {result['pipeline_ips']:.1f} images/s, "
                 f"{result['pipeline_headroom']:.1f}x the training step (target >= 3)")
    if result.get("fit_ips") is not None:
        lines.append(f"UNet.fit fed by the pipeline: {result['fit_ips']:.2f} images/s")
    return "\n".join(lines)


def main(argv=None):
    """`python -m keras_unet.benchmarks.training`: run `benchmark_training` from the command line.

    Example:
    ```
    python -m keras_unet.benchmarks.training --steps 10 --batch-size 8 --out training.json
    ```
    """
    parser = argparse.ArgumentParser(prog="python -m keras_unet.benchmarks.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="folder with images/ and masks/ (default: shipped nuclei set)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--no-fit", action="store_true", help="skip timing UNet.fit on the pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="training_benchmark.json", help="JSON output path")
    args = parser.parse_args(argv)
    benchmark_training(data=args.data, image_size=tuple(args.image_size), channels=args.channels,
                       filters=args.filters, depth=args.depth, batch_size=args.batch_size,
                       steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                       augment=not args.no_augment, measure_fit=not args.no_fit, seed=args.seed,
                       out=args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
