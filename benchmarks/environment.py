"""What the numbers were measured on: machine, CPU, GPU, libraries, date.

Nothing here imports TensorFlow or Keras. A GPU name is looked up only through a Keras backend
that is already imported (a `.keras` model was loaded): `torch.cuda` or `jax.devices()`.

Example:
```python
from keras_unet.benchmarks.environment import collect_environment, runtime_info

collect_environment(threads=2)["cpu"]
```
"""

import datetime
import os
import platform
import sys


def _package_version(*names):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_model():
    """The CPU's marketing name, from /proc/cpuinfo on Linux (also ARM boards), else `platform`.

    Example:
    ```python
    cpu_model()  # "AMD EPYC"
    ```
    """
    try:
        with open("/proc/cpuinfo") as handle:
            info = handle.read()
    except OSError:
        info = ""
    # x86 names the CPU in "model name"; ARM kernels use "Hardware", "Model" or only "CPU part".
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value:
                    return value
    return platform.processor() or platform.machine() or "unknown"


def gpu_name():
    """Name of the first GPU seen by an already imported Keras backend, or None.

    Example:
    ```python
    gpu_name()  # "NVIDIA H100 80GB HBM3" on a GPU machine after a .keras model loaded
    ```
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:  # a broken CUDA install must not stop a report
            pass
    jax = sys.modules.get("jax")
    if jax is not None:
        try:
            devices = [d for d in jax.devices() if d.platform == "gpu"]
            if devices:
                return getattr(devices[0], "device_kind", str(devices[0]))
        except Exception:
            pass
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            devices = tf.config.list_physical_devices("GPU")
            if devices:
                details = tf.config.experimental.get_device_details(devices[0])
                return details.get("device_name", devices[0].name)
        except Exception:
            pass
    return None


def keras_backend():
    """The Keras backend in use if Keras is already imported, else `$KERAS_BACKEND` or None.

    Example:
    ```python
    keras_backend()  # "tensorflow"
    ```
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            return keras.config.backend()
        except Exception:
            pass
    return os.environ.get("KERAS_BACKEND")


def runtime_info(runner):
    """Runtime name, version and execution provider / delegate of a loaded runner.

    Args:
        runner: an `keras_unet.runtime` runner.

    Returns:
        dict with `runtime`, `runtime_version`, `execution_provider`.

    Example:
    ```python
    runtime_info(load_runner("m.onnx"))  # {"runtime": "onnxruntime", ...}
    ```
    """
    fmt = getattr(runner, "format", None)
    if fmt == "onnx":
        session = getattr(runner, "session", None)
        providers = None
        if session is not None and hasattr(session, "get_providers"):
            providers = session.get_providers()
        providers = providers or getattr(runner, "providers", None) or ["CPUExecutionProvider"]
        return {
            "runtime": "onnxruntime",
            "runtime_version": _package_version("onnxruntime", "onnxruntime-gpu"),
            "execution_provider": ",".join(providers),
        }
    if fmt == "tflite":
        interpreter = getattr(runner, "interpreter", None)
        module = type(interpreter).__module__ if interpreter is not None else ""
        if module.startswith("tflite_runtime") or (
            not module and "ai_edge_litert" not in sys.modules and "tflite_runtime" in sys.modules
        ):
            name, version = "tflite-runtime", _package_version("tflite-runtime")
        else:
            name, version = "ai-edge-litert", _package_version("ai-edge-litert")
        delegate = getattr(runner, "delegate", None)
        # Both interpreters apply the XNNPACK delegate to float and int8 graphs by default.
        return {"runtime": name, "runtime_version": version, "execution_provider": delegate or "XNNPACK (default)"}
    if fmt == "keras":
        backend = keras_backend()
        gpu = gpu_name()
        return {
            "runtime": f"keras/{backend}" if backend else "keras",
            "runtime_version": _package_version("keras"),
            "execution_provider": f"GPU: {gpu}" if gpu else "CPU",
        }
    if fmt == "openvino":
        precision = getattr(runner, "precision", None) or "default"
        return {"runtime": "openvino", "runtime_version": _package_version("openvino"),
                "execution_provider": f"{getattr(runner, 'device', 'CPU')} ({precision})"}
    return {"runtime": fmt, "runtime_version": None, "execution_provider": None}


def collect_environment(threads=None):
    """Machine-wide facts every report carries.

    Args:
        threads: threads requested for the runtimes (None = runtime default).

    Returns:
        dict with `date`, `hostname`, `platform`, `machine`, `python`, `cpu`, `cpu_count`,
        `gpu`, `keras_backend`, `threads`, and versions of numpy and the runtimes installed.

    Example:
    ```python
    collect_environment(threads=2)["python"]  # "3.11.9"
    ```
    """
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_name(),
        "keras_backend": keras_backend(),
        "threads": threads,
        "versions": {
            "numpy": _package_version("numpy"),
            "ai-edge-litert": _package_version("ai-edge-litert"),
            "tflite-runtime": _package_version("tflite-runtime"),
            "onnxruntime": _package_version("onnxruntime", "onnxruntime-gpu"),
            "openvino": _package_version("openvino"),
            # Installed versions (read from package metadata, nothing is imported).
            "keras": _package_version("keras"),
            "tensorflow": _package_version("tensorflow", "tensorflow-cpu"),
        },
    }
