"""Train a U-Net on a folder of images and masks.

DATA holds images/<stem>.<png|jpg|...> and masks/<stem>.png. Without --val-data,
--val-split of DATA is held out (seeded). OUT receives:

  model.keras    the best epoch by validation IoU
  last.keras     the latest epoch (what a resumed run continues from)
  training.csv   one row per epoch
  metrics.json   validation IoU and Dice (mean and per class) of model.keras
  config.json    the arguments, the epochs completed and early stopping's count, so the same
                 command resumes the run where it was

Running the same command again with the same OUT resumes an unfinished run: after Ctrl-C
(the message says where it stopped and the command to run), a kill or a crash, at any
moment. Every file is written under a temporary name and renamed into place, and an epoch
counts as done once model.keras, last.keras and then config.json record it. A run whose
loss becomes NaN or infinite stops at once, keeping the last good checkpoints, and exits 1
without writing metrics.json. A resumed run stops early at the epoch the uninterrupted one
would (early stopping keeps counting the epochs without a better validation IoU). A finished
run is never overwritten: it continues only if --epochs is raised, and, if early stopping
ended it, --patience too.

More than one device or machine (JAX backend, Keras' own keras.distribution): with
--strategy data-parallel every process trains on its share of each global batch of
--batch-size images and all hold the same weights; give every machine the same command, the
data at the same path, and its own --process-id. Process 0 writes OUT; the others write
nothing. (TensorFlow's MultiWorkerMirroredStrategy is not offered: Keras 3's fit fails under
it on more than one worker, keras-team/keras#20585.)

Examples:
  keras-unet train --data data/nuclei --out runs/nuclei --image-size 128 --channels 1
  keras-unet train --data camvid/train --val-data camvid/val --out runs/camvid \\
      --num-classes 11 --ignore-index 11 --image-size 256 352 --loss ce_dice
  # two machines; on 10.0.0.1 with --process-id 0, on the other with --process-id 1:
  KERAS_BACKEND=jax keras-unet train --data data/nuclei --out runs/nuclei \\
      --strategy data-parallel --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
"""

import argparse
import contextlib
import csv
import json
import os

HELP = "train a U-Net on DIR/images + DIR/masks"

STATE_FILE = "config.json"
BEST_FILE, LAST_FILE, LOG_FILE, METRICS_FILE = "model.keras", "last.keras", "training.csv", "metrics.json"
# Arguments that define the run: resuming with different values would silently train
# a different model into the same folder.
RUN_DEFINING = (
    "data", "val_data", "val_split", "image_size", "channels", "num_classes", "ignore_index",
    "mask_encoding", "encoder", "filters", "depth", "use_batchnorm", "upsample",
    "use_attention", "residual", "dropout", "loss", "seed", "init", "qat",
)  # fmt: skip


STRATEGIES = ("none", "mirrored", "data-parallel")
MULTIWORKER_REMOVED = (
    "'multiworker' (TensorFlow's MultiWorkerMirroredStrategy) was removed: Keras 3's fit fails "
    "under it on more than one worker (keras-team/keras#20585); train on several machines with "
    "KERAS_BACKEND=jax and --strategy data-parallel"
)


def strategy_name(text):
    """`--strategy`: one of STRATEGIES; `multiworker` is refused with the reason and what to use."""
    if text == "multiworker":
        raise argparse.ArgumentTypeError(MULTIWORKER_REMOVED)
    return text


strategy_name.__name__ = "strategy"


def add_arguments(parser):
    from keras_unet.console.arguments import (ImageSizeAction, any_int, existing_dir, existing_file,
                                              half_open_fraction, host_port, non_negative_int,
                                              open_fraction, output_dir, positive_float,
                                              positive_int)

    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="DIR", type=existing_dir,
                      help="folder with images/ and masks/")
    data.add_argument("--val-data", metavar="DIR", type=existing_dir,
                      help="validation folder with images/ and masks/ (default: hold out "
                           "--val-split of --data)")
    data.add_argument("--val-split", type=open_fraction, default=0.2, metavar="F",
                      help="fraction of --data held out when --val-data is absent, in (0, 1)")
    data.add_argument("--image-size", type=positive_int, nargs="+", action=ImageSizeAction,
                      default=[128], metavar=("H", "W"),
                      help="model input size, H or H W; images are resized to it")
    data.add_argument("--channels", type=int, default=3, choices=[1, 3, 4],
                      help="1 grayscale, 3 RGB, 4 RGBA; images are converted")
    data.add_argument("--num-classes", type=positive_int, default=1, metavar="K",
                      help="1 for binary masks (sigmoid), else number of classes (softmax)")
    data.add_argument("--ignore-index", type=non_negative_int, default=None, metavar="K",
                      help="mask value skipped by loss and metrics, e.g. 11 for CamVid void "
                           "(default: none, every value is a class)")
    data.add_argument("--mask-encoding", default="auto", choices=["auto", "binary", "index", "trimap"],
                      help="how mask values map to classes")
    data.add_argument("--no-augment", action="store_true", help="turn off flips/rotation/zoom/contrast")
    data.add_argument("--class-names", nargs="+", metavar="NAME",
                      help="stored in metrics and exports (default: classes are named by index)")

    model = parser.add_argument_group("model")
    model.add_argument("--encoder", default="vanilla",
                       help="vanilla, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large, resnet50")
    model.add_argument("--encoder-weights", default="none", metavar="imagenet|none|PATH",
                       help="pretrained encoder weights")
    model.add_argument("--filters", type=positive_int, default=64, metavar="N",
                       help="first-stage filters")
    model.add_argument("--depth", type=positive_int, default=4, metavar="N",
                       help="number of downsamplings")
    model.add_argument("--use-batchnorm", action="store_true", help="batch norm in every conv block")
    model.add_argument("--upsample", default="transpose", choices=["transpose", "bilinear", "nearest"],
                       help="how the decoder upsamples: transposed convolution or resizing")
    model.add_argument("--use-attention", action="store_true", help="attention gates on skips")
    model.add_argument("--residual", action="store_true", help="residual conv blocks")
    model.add_argument("--dropout", type=half_open_fraction, default=0.0, metavar="F",
                       help="dropout rate inside conv blocks, in [0, 1)")

    fit = parser.add_argument_group("training")
    fit.add_argument("--out", required=True, metavar="OUTDIR", type=output_dir,
                     help="run folder (created; an unfinished run there is resumed)")
    fit.add_argument("--epochs", type=positive_int, default=20, metavar="N",
                     help="total epochs, counting those of a resumed run")
    fit.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                     help="images per step, over all devices and processes (the global batch)")
    fit.add_argument("--loss", default=None,
                     help="dice, jaccard, focal, tversky, bce_dice, ce_dice, bce, ce "
                          "(default: bce_dice for binary, ce_dice for multi-class)")
    fit.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate, > 0")
    fit.add_argument("--patience", type=non_negative_int, default=10, metavar="N",
                     help="early-stopping patience in epochs without a better validation IoU")
    fit.add_argument("--seed", type=any_int, default=0,
                     help="seed of the split, the shuffle, the augmentation and the initial weights")
    fit.add_argument("--strategy", default="none", type=strategy_name, choices=STRATEGIES,
                     help="none: one device; mirrored: every GPU/CPU device of this machine "
                          "(TensorFlow backend, tf.distribute.MirroredStrategy); data-parallel: "
                          "every device of one or several machines (JAX backend, "
                          "keras.distribution.DataParallel). TensorFlow's multiworker strategy is "
                          "not offered: Keras 3 cannot fit under it on more than one worker "
                          "(keras-team/keras#20585)")
    fit.add_argument("--mixed-precision", action="store_true",
                     help="mixed_float16 on a GPU (ignored with a note on CPU)")
    fit.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                     help="use only the first N training pairs, for quick trials (default: all)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.add_argument("--init", metavar="MODEL.keras", type=existing_file, default=None,
                     help="start from this trained model (its architecture and weights; the "
                          "model options are not used) (default: a new model)")
    fit.add_argument("--qat", action="store_true",
                     help="quantization-aware fine-tuning of --init (TensorFlow backend): its "
                          "int8-simulating copy learns to reproduce the --init model's outputs "
                          "(SGD with momentum 0.9 at --lr); export the result with --quantize "
                          "int8. Train-set IoU is not meaningful then (the targets are "
                          "probabilities); val_iou is")

    cluster = parser.add_argument_group(
        "more than one machine (--strategy data-parallel; the same command on every machine)")
    cluster.add_argument("--coordinator", type=host_port, metavar="HOST:PORT",
                         help="where process 0 listens, reachable from every machine (default: "
                              "KERAS_DISTRIBUTION_JOB_ADDRESSES, Slurm's first node, or "
                              "MASTER_ADDR:MASTER_PORT; none: one process)")
    cluster.add_argument("--num-processes", type=positive_int, metavar="N",
                         help="processes taking part, one per machine (default: "
                              "KERAS_DISTRIBUTION_NUM_PROCESSES, SLURM_NTASKS or WORLD_SIZE; else 1)")
    cluster.add_argument("--process-id", type=non_negative_int, metavar="I",
                         help="this process, 0 to N-1; 0 runs on the coordinator's host and alone "
                              "writes OUT (default: KERAS_DISTRIBUTION_PROCESS_ID, SLURM_PROCID or "
                              "RANK)")
    cluster.add_argument("--coordinator-timeout", type=positive_float, default=120, metavar="S",
                         help="seconds to wait for every process to join before giving up")


def image_size(values):
    if len(values) not in (1, 2) or min(values) <= 0:
        raise ValueError(f"--image-size takes H or H W, positive. Received: {values}")
    return (values[0], values[-1])


def _check_class_names(args):
    """--class-names must fit --num-classes before any data is read or a model built.

    The rule is `keras_unet.models.unet.check_class_names`: one name per class, or for a
    binary model one name (the foreground) or two (background, foreground).
    """
    from keras_unet.models.unet import check_class_names

    try:
        check_class_names(args.class_names, args.num_classes)
    except ValueError:
        allowed = ("one name (the foreground) or two (background, foreground)"
                   if args.num_classes == 1 else f"{args.num_classes} names, one per class")
        raise ValueError(
            f"--class-names takes {allowed} for --num-classes {args.num_classes}. "
            f"Received: --class-names {' '.join(args.class_names)}"
        ) from None


def _load_state(out):
    path = os.path.join(out, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path, data):
    from keras_unet.runtime.files import write_json_atomic

    write_json_atomic(path, data)


def _run_defaults():
    """The default of every run-defining option, as `keras-unet train` parses it."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return {k: parser.get_default(k) for k in RUN_DEFINING}


def check_resume(args, state):
    """Decide how to treat an existing run folder; returns the epoch to start from."""
    if state is None:
        from keras_unet.callbacks import is_temporary_file

        # Temporary files of a run killed before it wrote config.json do not count.
        if os.path.isdir(args.out) and [n for n in os.listdir(args.out) if not is_temporary_file(n)]:
            raise ValueError(
                f"--out {args.out!r} exists and is not a keras-unet run folder (no {STATE_FILE}); "
                "refusing to write into it. Choose an empty or new folder."
            )
        return 0
    # A setting missing from the saved state is one that did not exist when the run was
    # started (an older keras-unet): it ran with that option's default.
    defaults = _run_defaults()
    saved = {k: state["args"].get(k, defaults[k]) for k in RUN_DEFINING}
    changed = {k: (saved[k], getattr(args, k)) for k in RUN_DEFINING if saved[k] != getattr(args, k)}
    if changed:
        detail = ", ".join(f"--{k.replace('_', '-')} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"--out {args.out!r} holds a run with different settings ({detail}). "
            "Resume with the same settings or choose a new --out."
        )
    done = state.get("epochs_completed", 0)
    if state.get("finished") and args.epochs <= done:
        raise ValueError(
            f"--out {args.out!r} holds a finished run ({done} epochs, see metrics.json). "
            f"Raise --epochs above {done} to continue it, or choose a new --out."
        )
    since = state.get("epochs_since_best", 0)
    if state.get("finished") and stopped_early(since, args.patience):
        raise ValueError(
            f"--out {args.out!r} holds a finished run: early stopping ended it after {done} "
            f"epochs, the last {since} without a better validation IoU (--patience "
            f"{args.patience}). Raise --patience above {since} to continue it, or choose a new --out."
        )
    return done


def stopped_early(epochs_since_best, patience):
    """Whether `EarlyStopping(patience)` ends a run that has gone `epochs_since_best` epochs
    without a better value (Keras stops at the end of an epoch that did not improve, once its
    count reaches the patience)."""
    return epochs_since_best >= max(patience, 1)


def _early_stopping_point(state, done):
    """`[best val IoU or NaN, epochs since it]` of a run resumed after `done` epochs, as an
    array, so that process 0 can send it to the others. Runs saved before keras-unet
    recorded the count resume it from 0."""
    import numpy as np

    if not done or state.get("best_val_iou") is None:
        return np.array([np.nan, 0.0])
    return np.array([state["best_val_iou"], state.get("epochs_since_best", 0)], dtype=np.float64)


def trim_log(path, epochs):
    """Keep the header and the rows of the first `epochs` epochs of a CSVLogger file.

    CSVLogger writes an epoch's row before the epoch is committed to config.json; a run
    stopped in between leaves rows that the resumed run writes again.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return
    width = len(next(csv.reader([lines[0]])))
    kept = lines[:1]
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        if len(row) == width and row[0].isdigit() and int(row[0]) < epochs and line.endswith("\n"):
            kept.append(line)
    if kept != lines:
        from keras_unet.runtime.files import write_text_atomic

        write_text_atomic(path, "".join(kept))


def _load_last(args, epochs_done):
    """The model of a resumed run, from last.keras; clear errors if it cannot be."""
    import keras

    import keras_unet  # noqa: F401  (registers the layers for loading)

    path = os.path.join(args.out, LAST_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--out {args.out!r}: {STATE_FILE} records {epochs_done} completed epoch(s) but "
            f"{LAST_FILE} is missing, so the run cannot resume. Choose a new --out to start again."
        )
    try:
        return keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        reason = " ".join(str(error).split())[:200]
        raise ValueError(
            f"--out {args.out!r}: {path} cannot be loaded ({type(error).__name__}: {reason}), "
            f"so the run cannot resume from epoch {epochs_done}. {BEST_FILE} may still hold the "
            "best epoch; choose a new --out to start again."
        ) from error


def _strategy(name):
    """The tf.distribute strategy of --strategy none or mirrored (data-parallel needs none:
    keras.distribution, set by `keras_unet.distribution.initialize`, does that work)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def resolve_cluster(args):
    """The `keras_unet.distribution.Cluster` of --strategy data-parallel (None for the other
    strategies), after checking that the strategy, the backend and the cluster options fit
    together; ValueError naming the option otherwise. Nothing is started."""
    import keras

    given = [f"--{name.replace('_', '-')}" for name in ("coordinator", "num_processes", "process_id")
             if getattr(args, name, None) is not None]
    if args.strategy != "data-parallel":
        if given:
            raise ValueError(f"{given[0]} is for --strategy data-parallel (several processes); "
                             f"received --strategy {args.strategy}")
        if args.strategy == "mirrored" and keras.backend.backend() != "tensorflow":
            raise ValueError("--strategy mirrored is TensorFlow's tf.distribute.MirroredStrategy and "
                             f"needs KERAS_BACKEND=tensorflow (this process runs "
                             f"{keras.backend.backend()!r}); on JAX use --strategy data-parallel")
        return None
    from keras_unet import distribution

    cluster = distribution.resolve_cluster(args.coordinator, args.num_processes, args.process_id)
    if keras.backend.backend() != "jax":
        raise ValueError("--strategy data-parallel needs the JAX backend (run it with "
                         f"KERAS_BACKEND=jax; this process runs {keras.backend.backend()!r}); on "
                         "TensorFlow, --strategy mirrored uses every device of one machine")
    return cluster


def check_global_batch(batch_size, cluster):
    """--batch-size is the global batch: every device must get an equal share of it."""
    devices = cluster.num_devices
    if batch_size % devices:
        larger = -(-batch_size // devices) * devices
        raise ValueError(
            f"--batch-size {batch_size} does not split evenly over the {devices} devices of this "
            f"data-parallel run ({cluster.num_processes} process(es)); expected a multiple of "
            f"{devices}, e.g. --batch-size {larger}"
        )


def validation_batch_size(count, batch_size, devices):
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


def _validation_for_fit(args, val, cluster):
    """`val` rebatched so that every batch splits over the devices; says what is left out."""
    count = sum(int(batch[0].shape[0]) for batch in val)
    size = validation_batch_size(count, args.batch_size, cluster.num_devices)
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
              f"{METRICS_FILE} scores all {count}")
    return val.unbatch().batch(size, drop_remainder=True)


def _resume_from_chief(model, args, cluster, epochs_done):
    """Data-parallel resume: process 0 reads last.keras, every process takes its weights and
    optimizer state (the other machines need no copy of OUT)."""
    import numpy as np

    from keras_unet import distribution

    model.optimizer.build(model.trainable_variables)
    variables = list(model.variables) + list(model.optimizer.variables)
    like = [np.asarray(variable.value) for variable in variables]

    def read():
        with distribution.local_only():
            saved = _load_last(args, epochs_done)
            values = [np.asarray(v.value) for v in list(saved.variables) + list(saved.optimizer.variables)]
        if [v.shape for v in values] != [v.shape for v in like]:
            raise ValueError(
                f"--out {args.out!r}: {LAST_FILE} does not hold the variables of the model these "
                "options build, so the run cannot resume. Choose a new --out to start again."
            )
        return [value.astype(ref.dtype) for value, ref in zip(values, like)]

    for variable, value in zip(variables, distribution.on_chief(cluster, read, like)):
        variable.assign(value)
    # The saved optimizer carries the old rate; a resume after a NaN may lower it.
    model.optimizer.learning_rate = args.lr


def _local_checkpoint(filepath, **kwargs):
    """AtomicModelCheckpoint that saves with the distribution switched off, for process 0
    alone (see `keras_unet.distribution.local_only`)."""
    from keras_unet.callbacks import AtomicModelCheckpoint
    from keras_unet.distribution import local_only

    class LocalCheckpoint(AtomicModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            with local_only():
                super()._save_model(epoch, batch, logs)

    return LocalCheckpoint(filepath, **kwargs)


def _set_precision(enabled):
    import keras

    if not enabled:
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        print("note: --mixed-precision needs a GPU; training in float32 on this CPU")


def build_model(args):
    import keras_unet

    weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
    return keras_unet.UNet(
        input_shape=(*image_size(args.image_size), args.channels),
        num_classes=args.num_classes,
        filters=args.filters,
        depth=args.depth,
        use_batchnorm=args.use_batchnorm,
        dropout=args.dropout,
        upsample=args.upsample,
        use_attention=args.use_attention,
        residual=args.residual,
        encoder=args.encoder,
        encoder_weights=weights,
        class_names=args.class_names,
    )


def default_loss(num_classes):
    return "bce_dice" if num_classes == 1 else "ce_dice"


def load_data(args, drop_remainder=False):
    """(train, validation) tf.data datasets from the arguments; `drop_remainder` drops the
    last incomplete training batch (data-parallel: every step needs the whole global batch)."""
    from keras_unet.runtime import imageio
    from keras_unet import data

    train_data = imageio.list_pairs(args.data)[: args.max_images] if args.max_images else args.data
    split = {"validation_data": args.val_data} if args.val_data else {"validation_split": args.val_split}
    return data.load_dataset(
        train_data,
        image_size=image_size(args.image_size),
        channels=args.channels,
        num_classes=args.num_classes,
        mask_encoding=args.mask_encoding,
        ignore_index=args.ignore_index,
        batch_size=args.batch_size,
        augment=not args.no_augment,
        shuffle=True,
        seed=args.seed,
        drop_remainder=drop_remainder,
        **split,
    )


def compile_model(model, args, teacher=None):
    """Adam and the segmentation loss; with a `teacher` (--qat), SGD with momentum and the
    distillation loss towards the teacher's probabilities (what worked for QAT, see
    `keras_unet.quantization.distillation`)."""
    import keras

    from keras_unet import losses, metrics

    if teacher is not None:
        from keras_unet.quantization import distillation_loss

        optimizer, loss = keras.optimizers.SGD(args.lr, momentum=0.9), distillation_loss(teacher)
    else:
        optimizer = keras.optimizers.Adam(args.lr)
        loss = losses.get_loss(args.loss or default_loss(args.num_classes), ignore_index=args.ignore_index)
    model.compile(
        optimizer=optimizer, loss=loss,
        metrics=metrics.get_metrics(args.num_classes, ignore_index=args.ignore_index, per_class=True),
    )


def check_init(args):
    """--qat needs --init, one device and the TensorFlow backend; ValueError otherwise."""
    if getattr(args, "qat", False):
        import keras

        if not args.init:
            raise ValueError("--qat fine-tunes a trained model: give it with --init MODEL.keras")
        if args.strategy != "none":
            raise ValueError(f"--qat trains on one device; --strategy {args.strategy} is not "
                             "available with it")
        if keras.backend.backend() != "tensorflow":
            raise ValueError("--qat needs the TensorFlow backend (the int8 exports read its "
                             f"fake-quant ops); KERAS_BACKEND is {keras.backend.backend()!r}")


def load_init(args):
    """The --init model (None without --init); a clear error for a file that is not one."""
    if not args.init:
        return None
    from keras_unet.export.source import load_source_model

    from keras_unet.export.source import model_facts

    try:
        model, _ = load_source_model(args.init)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--init {args.init!r}: {str(error).split('. Received')[0]}") from error
    facts = model_facts(model)
    for option, value, wanted in (("--channels", args.channels, facts["channels"]),
                                  ("--num-classes", args.num_classes, facts["num_classes"])):
        if value != wanted:
            raise ValueError(f"--init {args.init!r} takes {option} {wanted}; received {option} {value}")
    return model


def initial_model(args, init):
    """The model a new run starts from: a new UNet, the --init model, or (--qat) the
    quantize-aware copy of the --init model."""
    if init is None:
        model = build_model(args)
    elif args.qat:
        from keras_unet.quantization import quantize_aware

        model = quantize_aware(init)
    else:
        import keras

        model = keras.models.clone_model(init)
        model.set_weights(init.get_weights())
    compile_model(model, args, teacher=init if args.qat else None)
    return model


def run(args):
    import keras
    import numpy as np

    from keras_unet.callbacks import (ResumableEarlyStopping, StopOnNonFiniteLoss, TrainingDiverged,
                                      WarnOnCollapse)

    image_size(args.image_size)
    _check_class_names(args)
    check_init(args)
    cluster = resolve_cluster(args)
    if cluster is not None:  # before any JAX computation, and on every process
        from keras_unet import distribution

        cluster = distribution.initialize(cluster, timeout=args.coordinator_timeout)
        check_global_batch(args.batch_size, cluster)
        print(f"data-parallel: {cluster.describe()}; global batch {args.batch_size}, "
              f"{args.batch_size // cluster.num_devices} per device")
    chief = cluster is None or cluster.is_chief
    # Only process 0 reads and writes OUT; the others learn from it where the run starts.
    state = None
    log_path = os.path.join(args.out, LOG_FILE)

    def open_run_folder():
        nonlocal state
        from keras_unet.callbacks import remove_temporary_files

        state = _load_state(args.out)
        done = check_resume(args, state)
        os.makedirs(args.out, exist_ok=True)
        # Files a killed run left under their temporary names were never complete.
        remove_temporary_files(args.out)
        if done:
            trim_log(log_path, done)
        return done

    initial_epoch = int(_on_chief(cluster, open_run_folder, like=0))
    # Early stopping and the best-model checkpoint go on from where the run was (every process
    # stops at the same epoch under data-parallel, so all of them need it).
    best_so_far, since_best = _on_chief(cluster, lambda: _early_stopping_point(state, initial_epoch),
                                        like=np.zeros(2))
    best_so_far = None if np.isnan(best_so_far) else float(best_so_far)
    since_best = int(since_best)
    # Stopped early, then interrupted before the run was scored: nothing is left to train.
    last_epoch = initial_epoch if stopped_early(since_best, args.patience) else args.epochs
    keras.utils.set_random_seed(args.seed)
    _set_precision(args.mixed_precision)

    strategy = _strategy(args.strategy)
    if args.strategy == "mirrored":
        print(f"{args.strategy} strategy: training on {strategy.num_replicas_in_sync} replica(s)")
    # Data-parallel: every process builds the whole pipeline and Keras keeps its share of each
    # batch; a folder missing on one machine must stop all of them, not leave them waiting.
    train, val = _everywhere(cluster, lambda: load_data(args, drop_remainder=cluster is not None))
    init = load_init(args)
    if args.qat:
        from keras_unet.quantization import distillation_dataset

        # The targets are the --init model's probabilities on the same augmented batches.
        train = distillation_dataset(train, init)
    fit_val = val
    if cluster is not None:
        if not int(train.cardinality()):
            raise ValueError(f"--batch-size {args.batch_size} is more than the training images; "
                             "data-parallel steps take whole batches only")
        fit_val = _validation_for_fit(args, val, cluster)
    last_path = os.path.join(args.out, LAST_FILE)
    best_path = os.path.join(args.out, BEST_FILE)
    with strategy.scope():
        if initial_epoch and cluster is None:
            model = _load_last(args, initial_epoch)
            # The saved optimizer carries the old rate; a resume after a NaN may lower it.
            model.optimizer.learning_rate = args.lr
        else:
            model = initial_model(args, init)
            if initial_epoch:
                _resume_from_chief(model, args, cluster, initial_epoch)
        if initial_epoch and chief:
            print(f"resuming {args.out} from epoch {initial_epoch}")
            if last_epoch == initial_epoch:
                print(f"early stopping had ended the run ({since_best} epochs without a better "
                      "validation IoU): scoring its best model")

    record = {k: getattr(args, k) for k in RUN_DEFINING}
    if chief:
        _write_json(os.path.join(args.out, STATE_FILE),
                    {"args": record, "epochs_completed": initial_epoch, "finished": False,
                     "best_val_iou": best_so_far, "epochs_since_best": since_best})
    monitor = "val_iou"
    # Order matters: a NaN batch raises before any epoch-end callback runs; an epoch's log
    # row and checkpoints are written before config.json commits the epoch (a resumed run
    # drops log rows beyond the commit), the best model before the last one. Under
    # data-parallel every process sees the same (global) loss and val_iou, so all stop at
    # the same step; only process 0 writes.
    without_bn = args.encoder == "vanilla" and not args.use_batchnorm
    advice = (f"A U-Net without batch norm can collapse so at Adam's --lr {args.lr:g}: "
              "try --lr 1e-4, or --use-batchnorm." if without_bn else
              f"Try a lower --lr (now {args.lr:g}) or check that the masks have foreground.")
    callbacks = [_interrupt_check(), StopOnNonFiniteLoss(), WarnOnCollapse(advice)]
    if chief:
        checkpoint = _checkpoint_class(cluster)
        callbacks += [
            keras.callbacks.CSVLogger(log_path, append=bool(initial_epoch)),
            checkpoint(best_path, monitor=monitor, mode="max", save_best_only=True,
                       initial_value_threshold=best_so_far),
            checkpoint(last_path),
        ]
    early_stopping = ResumableEarlyStopping(initial_best=best_so_far, epochs_since_best=since_best,
                                            monitor=monitor, mode="max", patience=args.patience)
    callbacks.append(early_stopping)
    if chief:
        callbacks.append(_state_callback(args.out, record, early_stopping))
    try:
        # The tf.data pipeline shuffles (seeded); fit's own shuffle does not apply to it.
        model.fit(train, validation_data=fit_val, epochs=last_epoch, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=0 if args.quiet or not chief else 1, shuffle=False)
    except TrainingDiverged as error:
        if not chief:
            raise
        done = (_load_state(args.out) or {}).get("epochs_completed", 0)
        kept = (f"{LAST_FILE} keeps epoch {done} and {BEST_FILE} the best so far, no {METRICS_FILE} "
                f"was written. Lower --lr (now {args.lr:g}) and run again with the same --out to "
                f"resume from epoch {done}" if done else
                f"No epoch had completed, so nothing was saved. Lower --lr (now {args.lr:g}) and "
                f"run again")
        raise TrainingDiverged(
            f"the training loss became {error.loss} at epoch {error.epoch}, batch {error.batch}; "
            f"training stopped before that epoch was saved. {kept}.",
            epoch=error.epoch, batch=error.batch, loss=error.loss,
        ) from error

    if cluster is not None and cluster.multi_process:
        from keras_unet.distribution import weights_fingerprint

        # The same on every process when they trained in lockstep.
        print(f"process {cluster.process_id} of {cluster.num_processes}: weights "
              f"{weights_fingerprint(model)}")
        if not chief:
            print(f"process {cluster.process_id}: done; process 0 writes the run folder (its "
                  "--out, on its machine) and scores the best model")
            return 0
    from keras_unet.distribution import local_only

    # Process 0 scores the best model alone, on every validation image (fit's validation
    # under data-parallel may leave a few out); the others have finished.
    with local_only() if cluster is not None else contextlib.nullcontext():
        best = keras.models.load_model(best_path)
        compile_model(best, args)
        results = best.evaluate(val, return_dict=True, verbose=0)
    names = args.class_names or []
    per_class = {}
    for c in range(args.num_classes if args.num_classes > 1 else 0):
        per_class[names[c] if c < len(names) else str(c)] = float(results[f"iou_{c}"])
    summary = {
        "val_iou": float(results["iou"]),
        "val_dice": float(results["dice"]),
        "val_loss": float(results["loss"]),
        "val_iou_per_class": per_class or None,
        "epochs_completed": _load_state(args.out)["epochs_completed"],
        "class_names": args.class_names,
        "model": best_path,
    }
    from keras_unet.console.interrupts import raise_if_interrupted

    raise_if_interrupted()  # a Ctrl-C that a library swallowed: stop before "finished" is written
    _write_json(os.path.join(args.out, METRICS_FILE), summary)
    state = _load_state(args.out)
    state["finished"] = True
    _write_json(os.path.join(args.out, STATE_FILE), state)
    for name, value in per_class.items():
        print(f"  {name:<16} IoU {value:.4f}")
    print(f"validation IoU {summary['val_iou']:.4f}, Dice {summary['val_dice']:.4f} -> {best_path}")
    return 0


def _on_chief(cluster, work, like):
    """`work()` on process 0, its result everywhere (just `work()` without a cluster)."""
    if cluster is None:
        return work()
    from keras_unet.distribution import on_chief

    return on_chief(cluster, work, like)


def _everywhere(cluster, work):
    if cluster is None:
        return work()
    from keras_unet.distribution import everywhere

    return everywhere(cluster, work)


def _checkpoint_class(cluster):
    from keras_unet.callbacks import AtomicModelCheckpoint

    return AtomicModelCheckpoint if cluster is None else _local_checkpoint


def interrupted(args):
    """The line the CLI prints on Ctrl-C: what config.json says is kept, and how to resume."""
    command = getattr(args, "command_line", None) or "the same command"
    try:
        state = _load_state(args.out) or {}
    except (OSError, ValueError):
        state = {}
    done = state.get("epochs_completed") or 0
    if state.get("finished"):
        return f"the run in {args.out} had finished ({done} epochs, see {METRICS_FILE}); nothing was lost"
    if not done:
        return (f"no epoch had completed in {args.out}, so nothing was kept; "
                f"to start again run: {command}")
    last = os.path.join(args.out, LAST_FILE)
    if done >= args.epochs:
        return (f"all {done} epochs completed and saved in {last}, but {METRICS_FILE} was not "
                f"written yet; to finish run: {command}")
    return (f"stopped after {done} of {args.epochs} epochs, saved in {last} (the best so far in "
            f"{BEST_FILE}); to resume run: {command}")


def _interrupt_check():
    """A callback that stops at the next batch after a Ctrl-C, even one a library swallowed."""
    import keras

    from keras_unet.console.interrupts import raise_if_interrupted

    class InterruptCheck(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise_if_interrupted()

        def on_epoch_end(self, epoch, logs=None):  # first in the list: before any checkpoint
            raise_if_interrupted()

        def on_test_batch_end(self, batch, logs=None):
            raise_if_interrupted()

    return InterruptCheck()


def _state_callback(out, record, early_stopping):
    """A callback that commits finished epochs to config.json, so a stopped run can resume.

    It must come after the checkpoints in the callback list: config.json says an epoch is
    done only once model.keras and last.keras hold it. And after `early_stopping`, whose
    best value and count of epochs since it (updated by then) it records for the resume.
    """
    import keras

    class RunState(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best = early_stopping.best
            _write_json(
                os.path.join(out, STATE_FILE),
                {"args": record, "epochs_completed": epoch + 1, "finished": False,
                 "best_val_iou": None if best is None else float(best),
                 "epochs_since_best": int(early_stopping.wait)},
            )

    return RunState()
