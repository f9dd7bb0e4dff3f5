"""The steps of `keras-unet train`, each from the command's options: check them, load the
data and the --init model, the model a run starts (or resumes) from, the callbacks, fit, and
scoring the best epoch. `keras_unet.commands.train` parses the options and runs the steps in
order; the pieces they use have their own modules (the run folder:
`keras_unet.commands.run_folder`; several devices: `keras_unet.distribution`; the model:
`keras_unet.models.assembly`; the callbacks: `keras_unet.callbacks`).

Under `--strategy data-parallel` every process runs every step but writing: `cluster` is the
`keras_unet.distribution.Cluster` (None otherwise), and process 0 alone writes the run folder.
"""

import argparse
import contextlib


def image_size(values: list[int]) -> tuple[int, int]:
    """`--image-size` H or H W as `(H, W)`."""
    if len(values) not in (1, 2) or min(values) <= 0:
        raise ValueError(f"--image-size takes H or H W, positive. Received: {values}")
    return (values[0], values[-1])


def check_init(args: argparse.Namespace) -> None:
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


def load_init(args: argparse.Namespace) -> "keras.Model | None":  # noqa: F821
    """The --init model (None without --init); a clear error for a file that is not one."""
    if not args.init:
        return None
    from keras_unet.export.source import load_source_model, model_facts

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


def model_options(args: argparse.Namespace) -> "ModelOptions":  # noqa: F821
    """The model options of `args` as `keras_unet.models.assembly.ModelOptions`."""
    from keras_unet.models.assembly import ModelOptions

    weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
    return ModelOptions(
        image_size=image_size(args.image_size), channels=args.channels, num_classes=args.num_classes,
        filters=args.filters, depth=args.depth, use_batchnorm=args.use_batchnorm, dropout=args.dropout,
        upsample=args.upsample, use_attention=args.use_attention, residual=args.residual,
        encoder=args.encoder, encoder_weights=weights, class_names=args.class_names, loss=args.loss,
        learning_rate=args.lr, ignore_index=args.ignore_index)


def load_data(args: argparse.Namespace, drop_remainder: bool = False) -> tuple:
    """(train, validation) tf.data datasets from the arguments; `drop_remainder` drops the
    last incomplete training batch (data-parallel: every step needs the whole global batch)."""
    from keras_unet import data
    from keras_unet.runtime import imageio

    train_data = imageio.list_pairs(args.data)[: args.max_images] if args.max_images else args.data
    split = {"validation_data": args.val_data} if args.val_data else {"validation_split": args.val_split}
    return data.load_dataset(
        train_data, image_size=image_size(args.image_size), channels=args.channels,
        num_classes=args.num_classes, mask_encoding=args.mask_encoding, ignore_index=args.ignore_index,
        batch_size=args.batch_size, augment=not args.no_augment, shuffle=True, seed=args.seed,
        drop_remainder=drop_remainder, **split)


def data_and_init(args: argparse.Namespace, cluster) -> tuple:
    """`(train, val, fit_val, init)`: the datasets (`fit_val` is the validation fit runs each
    epoch: under data-parallel, batches that split over the devices) and the --init model.

    Under data-parallel every process builds the whole pipeline and Keras keeps its share of
    each batch; a folder missing on one machine stops all of them, not leaves them waiting.
    """
    from keras_unet.distribution import everywhere
    from keras_unet.distribution import training as parallel

    train, val = everywhere(cluster, lambda: load_data(args, drop_remainder=cluster is not None))
    init = load_init(args)
    if args.qat:
        from keras_unet.quantization import distillation_dataset

        # The targets are the --init model's probabilities on the same augmented batches.
        train = distillation_dataset(train, init)
    if cluster is None:
        return train, val, val, init
    parallel.check_training_batches(train, args.batch_size)
    return train, val, parallel.validation_for_fit(val, args.batch_size, cluster), init


def set_precision(enabled: bool) -> None:
    """--mixed-precision: mixed_float16 on a GPU; on a CPU, a note and float32."""
    import keras

    if not enabled:
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        print("note: --mixed-precision needs a GPU; training in float32 on this CPU")


def starting_model(args, options, folder, point, cluster, init) -> "keras.Model":  # noqa: F821
    """The model fit starts from: `initial_model` for a new run; for a resumed one, last.keras
    (under data-parallel, process 0's copy, handed to every process) at --lr (the saved
    optimizer carries the old rate; a resume after a NaN may lower it)."""
    from keras_unet.distribution import training as parallel
    from keras_unet.models.assembly import initial_model

    if not point.epoch:
        return initial_model(options, init, qat=args.qat)
    if cluster is None:
        model = folder.load_last(point.epoch)
    else:
        model = initial_model(options, init, qat=args.qat)
        parallel.resume_from_chief(model, cluster, lambda: folder.load_last(point.epoch), args.out)
    model.optimizer.learning_rate = args.lr
    return model


def callbacks_for(args, folder, point, cluster) -> list:
    """The callbacks of fit, in the order that keeps the run folder consistent.

    A NaN batch raises before any epoch-end callback runs; an epoch's log row and checkpoints
    are written before config.json commits the epoch (a resumed run drops log rows beyond the
    commit), the best model before the last one. Under data-parallel every process sees the
    same (global) loss and val_iou, so all stop at the same step; only process 0 writes.
    """
    import keras

    from keras_unet import callbacks as cb

    chief = cluster is None or cluster.is_chief
    without_bn = args.encoder == "vanilla" and not args.use_batchnorm
    advice = (f"A U-Net without batch norm can collapse so at Adam's --lr {args.lr:g}: "
              "try --lr 1e-4, or --use-batchnorm." if without_bn else
              f"Try a lower --lr (now {args.lr:g}) or check that the masks have foreground.")
    callbacks = [cb.InterruptCheck(), cb.StopOnNonFiniteLoss(), cb.WarnOnCollapse(advice)]
    if chief:
        checkpoint = cb.AtomicModelCheckpoint if cluster is None else cb.LocalModelCheckpoint
        callbacks += [
            keras.callbacks.CSVLogger(folder.log_path, append=bool(point.epoch)),
            checkpoint(folder.best_path, monitor="val_iou", mode="max", save_best_only=True,
                       initial_value_threshold=point.best_val_iou),
            checkpoint(folder.last_path),
        ]
    early_stopping = cb.ResumableEarlyStopping(
        initial_best=point.best_val_iou, epochs_since_best=point.epochs_since_best,
        monitor="val_iou", mode="max", patience=args.patience)
    callbacks.append(early_stopping)
    if chief:
        callbacks.append(cb.CommitEpoch(folder.commit_epoch, early_stopping))
    return callbacks


def score_best(args, folder, val, cluster) -> dict:
    """metrics.json's content: the best model scored on every validation image, alone on
    process 0 (fit's validation under data-parallel may leave a few out)."""
    import keras

    from keras_unet.distribution import local_only
    from keras_unet.models.assembly import compile_for_training

    with local_only() if cluster is not None else contextlib.nullcontext():
        best = keras.models.load_model(folder.best_path)
        compile_for_training(best, model_options(args))
        results = best.evaluate(val, return_dict=True, verbose=0)
    names = args.class_names or []
    per_class = {}
    for c in range(args.num_classes if args.num_classes > 1 else 0):
        per_class[names[c] if c < len(names) else str(c)] = float(results[f"iou_{c}"])
    return {
        "val_iou": float(results["iou"]),
        "val_dice": float(results["dice"]),
        "val_loss": float(results["loss"]),
        "val_iou_per_class": per_class or None,
        "epochs_completed": folder.epochs_completed(),
        "class_names": args.class_names,
        "model": folder.best_path,
    }
