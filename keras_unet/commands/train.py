"""Train a U-Net on a folder of images and masks.

DATA holds images/<stem>.<png|jpg|...> and masks/<stem>.png. Without --val-data,
--val-split of DATA is held out (seeded). OUT receives:

  model.keras    the best epoch by validation IoU
  last.keras     the latest epoch (what a resumed run continues from)
  training.csv   one row per epoch
  metrics.json   validation IoU and Dice (mean and per class) of model.keras
  config.json    the arguments and the epochs completed, so the same command resumes the run

Running the same command again with the same OUT resumes an unfinished run: after Ctrl-C
(the message says where it stopped and the command to run), a kill or a crash, at any
moment. Every file is written under a temporary name and renamed into place, and an epoch
counts as done once model.keras, last.keras and then config.json record it. A run whose
loss becomes NaN or infinite stops at once, keeping the last good checkpoints, and exits 1
without writing metrics.json. A finished run is never overwritten: it continues only if
--epochs is raised.

Examples:
  keras-unet train --data data/nuclei --out runs/nuclei --image-size 128 --channels 1
  keras-unet train --data camvid/train --val-data camvid/val --out runs/camvid \\
      --num-classes 11 --ignore-index 11 --image-size 256 352 --loss ce_dice
"""

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
    "use_attention", "residual", "dropout", "loss", "seed",
)  # fmt: skip


def add_arguments(parser):
    from keras_unet.console.arguments import (ImageSizeAction, any_int, existing_dir,
                                              half_open_fraction, non_negative_int, open_fraction,
                                              output_dir, positive_float, positive_int)

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
    fit.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per step")
    fit.add_argument("--loss", default=None,
                     help="dice, jaccard, focal, tversky, bce_dice, ce_dice, bce, ce "
                          "(default: bce_dice for binary, ce_dice for multi-class)")
    fit.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate, > 0")
    fit.add_argument("--patience", type=non_negative_int, default=10, metavar="N",
                     help="early-stopping patience in epochs without a better validation IoU")
    fit.add_argument("--seed", type=any_int, default=0,
                     help="seed of the split, the shuffle, the augmentation and the initial weights")
    fit.add_argument("--strategy", default="none", choices=["none", "mirrored", "multiworker"],
                     help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    fit.add_argument("--mixed-precision", action="store_true",
                     help="mixed_float16 on a GPU (ignored with a note on CPU)")
    fit.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                     help="use only the first N training pairs, for quick trials (default: all)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")


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
    changed = {k: (state["args"].get(k), getattr(args, k)) for k in RUN_DEFINING
               if state["args"].get(k) != getattr(args, k)}
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
    return done


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
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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


def load_data(args):
    """(train, validation) tf.data datasets from the arguments."""
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
        **split,
    )


def compile_model(model, args):
    import keras

    from keras_unet import losses, metrics

    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=losses.get_loss(args.loss or default_loss(args.num_classes), ignore_index=args.ignore_index),
        metrics=metrics.get_metrics(args.num_classes, ignore_index=args.ignore_index, per_class=True),
    )


def run(args):
    import keras

    from keras_unet.callbacks import (AtomicModelCheckpoint, StopOnNonFiniteLoss, TrainingDiverged,
                                      remove_temporary_files)

    image_size(args.image_size)
    _check_class_names(args)
    state = _load_state(args.out)
    initial_epoch = check_resume(args, state)
    os.makedirs(args.out, exist_ok=True)
    # Files a killed run left under their temporary names were never complete.
    remove_temporary_files(args.out)
    log_path = os.path.join(args.out, LOG_FILE)
    if initial_epoch:
        trim_log(log_path, initial_epoch)
    keras.utils.set_random_seed(args.seed)
    _set_precision(args.mixed_precision)

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = _strategy(args.strategy)
    if args.strategy != "none":
        print(f"{args.strategy} strategy: training on {strategy.num_replicas_in_sync} replica(s)")
    train, val = load_data(args)
    last_path = os.path.join(args.out, LAST_FILE)
    best_path = os.path.join(args.out, BEST_FILE)
    with strategy.scope():
        if initial_epoch:
            model = _load_last(args, initial_epoch)
            # The saved optimizer carries the old rate; a resume after a NaN may lower it.
            model.optimizer.learning_rate = args.lr
            print(f"resuming {args.out} from epoch {initial_epoch}")
        else:
            model = build_model(args)
            compile_model(model, args)

    record = {k: getattr(args, k) for k in RUN_DEFINING}
    best_so_far = state.get("best_val_iou") if initial_epoch else None
    _write_json(os.path.join(args.out, STATE_FILE),
                {"args": record, "epochs_completed": initial_epoch, "finished": False,
                 "best_val_iou": best_so_far})
    monitor = "val_iou"
    # Order matters: a NaN batch raises before any epoch-end callback runs; an epoch's log
    # row and checkpoints are written before config.json commits the epoch (a resumed run
    # drops log rows beyond the commit), the best model before the last one.
    callbacks = [
        _interrupt_check(),
        StopOnNonFiniteLoss(),
        keras.callbacks.CSVLogger(log_path, append=bool(initial_epoch)),
        AtomicModelCheckpoint(best_path, monitor=monitor, mode="max", save_best_only=True,
                              initial_value_threshold=best_so_far),
        AtomicModelCheckpoint(last_path),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=args.patience),
        _state_callback(args.out, record, monitor, best_so_far),
    ]
    try:
        # The tf.data pipeline shuffles (seeded); fit's own shuffle does not apply to it.
        model.fit(train, validation_data=val, epochs=args.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=0 if args.quiet else 1, shuffle=False)
    except TrainingDiverged as error:
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


def _state_callback(out, record, monitor, best):
    """A callback that commits finished epochs to config.json, so a stopped run can resume.

    It must come after the checkpoints in the callback list: config.json says an epoch is
    done only once model.keras and last.keras hold it.
    """
    import keras

    class RunState(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = best

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is not None and (self.best is None or value > self.best):
                self.best = float(value)
            _write_json(
                os.path.join(out, STATE_FILE),
                {"args": record, "epochs_completed": epoch + 1, "finished": False,
                 "best_val_iou": self.best},
            )

    return RunState()
