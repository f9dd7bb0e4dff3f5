"""Train a U-Net on a folder of images and masks.

DATA holds images/<stem>.<png|jpg|...> and masks/<stem>.png. Without --val-data,
--val-split of DATA is held out (seeded). OUT receives:

  model.keras    the best epoch by validation IoU
  last.keras     the latest epoch (what a resumed run continues from)
  training.csv   one row per epoch
  metrics.json   validation IoU and Dice (mean and per class) of model.keras
  config.json    the arguments, so `keras-unet train --out OUT` resumes the same run

Running the same command again with the same OUT resumes an unfinished run. A
finished run is never overwritten: it continues only if --epochs is raised.

Examples:
  keras-unet train --data data/nuclei --out runs/nuclei --image-size 128 --channels 1
  keras-unet train --data camvid/train --val-data camvid/val --out runs/camvid \\
      --num-classes 11 --ignore-index 11 --image-size 256 352 --loss ce_dice
"""

import json
import os

HELP = "train a U-Net on DIR/images + DIR/masks"

STATE_FILE = "config.json"
# Arguments that define the run: resuming with different values would silently train
# a different model into the same folder.
RUN_DEFINING = (
    "data", "val_data", "val_split", "image_size", "channels", "num_classes", "ignore_index",
    "mask_encoding", "encoder", "filters", "depth", "use_batchnorm", "upsample",
    "use_attention", "residual", "dropout", "loss", "seed",
)  # fmt: skip


def add_arguments(parser):
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="DIR", help="folder with images/ and masks/")
    data.add_argument("--val-data", metavar="DIR", help="validation folder (default: split --data)")
    data.add_argument("--val-split", type=float, default=0.2, metavar="F",
                      help="fraction of --data held out when --val-data is absent (default 0.2)")
    data.add_argument("--image-size", type=int, nargs="+", default=[128], metavar="H [W]",
                      help="model input size; images are resized to it (default 128)")
    data.add_argument("--channels", type=int, default=3, help="1 grayscale, 3 RGB (default 3)")
    data.add_argument("--num-classes", type=int, default=1,
                      help="1 for binary masks (sigmoid), else number of classes (softmax)")
    data.add_argument("--ignore-index", type=int, default=None, metavar="K",
                      help="mask value skipped by loss and metrics (e.g. 11 for CamVid void)")
    data.add_argument("--mask-encoding", default="auto", choices=["auto", "binary", "index", "trimap"],
                      help="how mask values map to classes (default auto)")
    data.add_argument("--no-augment", action="store_true", help="turn off flips/rotation/zoom/contrast")
    data.add_argument("--class-names", nargs="+", metavar="NAME", help="stored in metrics and exports")

    model = parser.add_argument_group("model")
    model.add_argument("--encoder", default="vanilla",
                       help="vanilla, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large, resnet50")
    model.add_argument("--encoder-weights", default="none", metavar="imagenet|none|PATH",
                       help="pretrained encoder weights (default none)")
    model.add_argument("--filters", type=int, default=64, help="first-stage filters (default 64)")
    model.add_argument("--depth", type=int, default=4, help="number of downsamplings (default 4)")
    model.add_argument("--use-batchnorm", action="store_true", help="batch norm in every conv block")
    model.add_argument("--upsample", default="transpose", choices=["transpose", "bilinear", "nearest"])
    model.add_argument("--use-attention", action="store_true", help="attention gates on skips")
    model.add_argument("--residual", action="store_true", help="residual conv blocks")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout inside conv blocks")

    fit = parser.add_argument_group("training")
    fit.add_argument("--out", required=True, metavar="OUTDIR", help="run folder (created)")
    fit.add_argument("--epochs", type=int, default=20)
    fit.add_argument("--batch-size", type=int, default=8)
    fit.add_argument("--loss", default=None,
                     help="dice, jaccard, focal, tversky, bce_dice, ce_dice, bce, ce "
                          "(default bce_dice for binary, ce_dice for multi-class)")
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    fit.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--strategy", default="none", choices=["none", "mirrored", "multiworker"],
                     help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    fit.add_argument("--mixed-precision", action="store_true",
                     help="mixed_float16 on a GPU (ignored with a note on CPU)")
    fit.add_argument("--max-images", type=int, default=None, metavar="N",
                     help="use only the first N training pairs (quick trials)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")


def image_size(values):
    if len(values) not in (1, 2) or min(values) <= 0:
        raise ValueError(f"--image-size takes H or H W, positive. Received: {values}")
    return (values[0], values[-1])


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
        if os.path.isdir(args.out) and os.listdir(args.out):
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

    image_size(args.image_size)
    state = _load_state(args.out)
    initial_epoch = check_resume(args, state)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    _set_precision(args.mixed_precision)

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = _strategy(args.strategy)
    if args.strategy != "none":
        print(f"{args.strategy} strategy: training on {strategy.num_replicas_in_sync} replica(s)")
    train, val = load_data(args)
    last_path = os.path.join(args.out, "last.keras")
    best_path = os.path.join(args.out, "model.keras")
    with strategy.scope():
        if initial_epoch:
            import keras_unet  # noqa: F401  (registers the layers for loading)

            model = keras.models.load_model(last_path)
            print(f"resuming {args.out} from epoch {initial_epoch}")
        else:
            model = build_model(args)
            compile_model(model, args)

    record = {k: getattr(args, k) for k in RUN_DEFINING}
    _write_json(os.path.join(args.out, STATE_FILE),
                {"args": record, "epochs_completed": initial_epoch, "finished": False})
    monitor = "val_iou"
    best_so_far = (state or {}).get("best_val_iou")
    callbacks = [
        keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, mode="max", save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.ModelCheckpoint(last_path),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=args.patience),
        keras.callbacks.CSVLogger(os.path.join(args.out, "training.csv"), append=bool(initial_epoch)),
        _state_callback(args.out, record, monitor, best_so_far),
    ]
    model.fit(train, validation_data=val, epochs=args.epochs, initial_epoch=initial_epoch,
              callbacks=callbacks, verbose=0 if args.quiet else 1)

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
    _write_json(os.path.join(args.out, "metrics.json"), summary)
    state = _load_state(args.out)
    state["finished"] = True
    _write_json(os.path.join(args.out, STATE_FILE), state)
    for name, value in per_class.items():
        print(f"  {name:<16} IoU {value:.4f}")
    print(f"validation IoU {summary['val_iou']:.4f}, Dice {summary['val_dice']:.4f} -> {best_path}")
    return 0


def _state_callback(out, record, monitor, best):
    """A callback that records finished epochs, so an interrupted run can resume."""
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
