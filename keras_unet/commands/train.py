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

HELP = "train a U-Net on DIR/images + DIR/masks"

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


def strategy_name(text: str) -> str:
    """`--strategy`: one of STRATEGIES; `multiworker` is refused with the reason and what to use."""
    if text == "multiworker":
        raise argparse.ArgumentTypeError(MULTIWORKER_REMOVED)
    return text


strategy_name.__name__ = "strategy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
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



def _check_class_names(args: argparse.Namespace) -> None:
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


def run_defaults() -> dict:
    """The default of every run-defining option, as `keras-unet train` parses it."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return {k: parser.get_default(k) for k in RUN_DEFINING}


def run_folder(args: argparse.Namespace) -> "RunFolder":  # noqa: F821
    """The run folder --out, holding (or to hold) a run of the run-defining options of `args`."""
    from keras_unet.commands.run_folder import RunFolder

    return RunFolder(args.out, {k: getattr(args, k) for k in RUN_DEFINING}, run_defaults())


def run(args: argparse.Namespace) -> int:
    """Train as the options say: check them, open the run folder, build the data and the model
    (or resume them), fit, and score the best epoch; process 0 alone writes the run folder."""
    import keras

    from keras_unet.callbacks import TrainingDiverged
    from keras_unet.commands import train_steps as steps
    from keras_unet.commands.run_folder import ResumePoint, stopped_early
    from keras_unet.console.interrupts import raise_if_interrupted
    from keras_unet.distribution import on_chief, weights_fingerprint
    from keras_unet.distribution import training as parallel

    steps.image_size(args.image_size)
    _check_class_names(args)
    steps.check_init(args)
    cluster = parallel.cluster_for_strategy(args.strategy, args.coordinator, args.num_processes,
                                            args.process_id)
    if cluster is not None:  # before any JAX computation, and on every process
        cluster = parallel.start_cluster(cluster, args.batch_size, args.coordinator_timeout)
    chief = cluster is None or cluster.is_chief
    # Process 0 opens the run folder; every process learns where the run starts and early
    # stopping's count (under data-parallel all of them stop at the same epoch).
    folder = run_folder(args)
    point = ResumePoint.from_array(on_chief(
        cluster, lambda: folder.open(args.epochs, args.patience).to_array(), like=ResumePoint().to_array()))
    # Stopped early, then interrupted before the run was scored: nothing is left to train.
    ended_early = stopped_early(point.epochs_since_best, args.patience)
    last_epoch = point.epoch if ended_early else args.epochs
    keras.utils.set_random_seed(args.seed)
    steps.set_precision(args.mixed_precision)

    strategy = parallel.tf_strategy(args.strategy)
    train, val, fit_val, init = steps.data_and_init(args, cluster)
    with strategy.scope():
        model = steps.starting_model(args, steps.model_options(args), folder, point, cluster, init)
    if point.epoch and chief:
        print(f"resuming {args.out} from epoch {point.epoch}")
        if ended_early:
            print(f"early stopping had ended the run ({point.epochs_since_best} epochs without a "
                  "better validation IoU): scoring its best model")
        elif last_epoch == point.epoch:
            print(f"all {point.epoch} epochs were trained before: scoring its best model")
    if chief:
        folder.begin(point)
    try:
        # The tf.data pipeline shuffles (seeded); fit's own shuffle does not apply to it.
        model.fit(train, validation_data=fit_val, epochs=last_epoch, initial_epoch=point.epoch,
                  callbacks=steps.callbacks_for(args, folder, point, cluster),
                  verbose=0 if args.quiet or not chief else 1, shuffle=False)
    except TrainingDiverged as error:
        if not chief:
            raise
        raise folder.diverged(error, args.lr) from error

    if cluster is not None and cluster.multi_process:
        # The same on every process when they trained in lockstep.
        print(f"process {cluster.process_id} of {cluster.num_processes}: weights "
              f"{weights_fingerprint(model)}")
        if not chief:
            print(f"process {cluster.process_id}: done; process 0 writes the run folder (its "
                  "--out, on its machine) and scores the best model")
            return 0
    summary = steps.score_best(args, folder, val, cluster)
    raise_if_interrupted()  # a Ctrl-C that a library swallowed: stop before "finished" is written
    folder.finish(summary)
    for name, value in (summary["val_iou_per_class"] or {}).items():
        print(f"  {name:<16} IoU {value:.4f}")
    print(f"validation IoU {summary['val_iou']:.4f}, Dice {summary['val_dice']:.4f} -> {folder.best_path}")
    return 0


def interrupted(args: argparse.Namespace) -> str:
    """The line the CLI prints on Ctrl-C: what config.json says is kept, and how to resume."""
    from keras_unet.commands.run_folder import RunFolder

    command = getattr(args, "command_line", None) or "the same command"
    return RunFolder(args.out, {}).stop_line(args.epochs, command)
