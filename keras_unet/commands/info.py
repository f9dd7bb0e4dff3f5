"""Print the versions of keras-unet and its runtimes, the Keras backend and the devices.

Example:
    keras-unet info
"""

import importlib.metadata
import os
import platform

HELP = "print versions, Keras backend and devices"

PACKAGES = (
    "keras",
    "tensorflow-cpu",
    "tensorflow",
    "jax",
    "torch",
    "numpy",
    "pillow",
    "onnx",
    "onnxruntime",
    "tf2onnx",
    "ai-edge-litert",
    "tflite-runtime",
)


def add_arguments(parser):
    parser.add_argument(
        "--no-devices", action="store_true", help="skip importing the backend to list devices"
    )


def package_versions():
    """`{distribution: version}` for the packages above that are installed."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def backend_devices():
    """Names of the devices the active Keras backend sees."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        devices = ["cpu"]
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        return devices
    return []


def run(args):
    from keras_unet.version import __version__

    print(f"keras-unet {__version__} (distribution keras-unet-edge)")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for name, version in package_versions().items():
        print(f"  {name:16s} {version}")
    print(f"keras backend: {os.environ.get('KERAS_BACKEND', 'tensorflow (default)')}")
    if not args.no_devices:
        for device in backend_devices():
            print(f"  device: {device}")
    return 0
