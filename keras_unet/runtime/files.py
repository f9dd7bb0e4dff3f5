"""Write a file next to its destination, then rename it into place.

A failed or rejected export must leave any earlier file at the destination untouched, so
every exporter writes to a temporary name in the destination folder (same file system, so
`os.replace` is atomic) and renames only once the new file passed verification.

Example:
```python
from keras_unet.runtime.files import atomic_output

with atomic_output("model.tflite") as tmp_path:
    tmp_path.write_bytes(b"...")   # raise here and model.tflite is left as it was
```
"""

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

# One megabyte in every size and memory figure keras-unet prints (export, bench): 10^6 bytes,
# the SI unit, so "MB" means the same thing everywhere.
MB = 10**6


def _temporary_names(folder, out):
    """Candidate temporary names beside `out` (random, so two writers do not collide)."""
    for _ in range(100):
        yield folder / f".{out.stem}.{secrets.token_hex(4)}.tmp{out.suffix}"
    raise FileExistsError(f"Could not create a temporary file beside '{out}'.")


@contextlib.contextmanager
def atomic_output(out) -> Iterator[Any]:
    """Yield a temporary `Path` beside `out`; on a clean exit rename it to `out`.

    The temporary name keeps the suffix of `out` (`.onnx`, `.tflite`), because tools that
    read the file before the rename (the verification runner, `model.export`) pick the
    format from the suffix.

    Args:
        out: destination path. Its folder must exist.

    Example:
    ```python
    with atomic_output("model.onnx") as tmp:
        save_somehow(tmp)
    ```
    """
    out = Path(out).absolute()
    folder = out.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The output folder does not exist: create it first. Received: out='{out}'"
        )
    tmp: Any = None
    try:
        # The name is claimed before the file exists, inside the try: a Ctrl-C landing just
        # after the file's creation (before any assignment could record it) is still cleaned
        # up. `os.open` with mode 0o666 lets the umask apply (`tempfile.mkstemp` gives 0600).
        for tmp in _temporary_names(folder, out):
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:
                tmp = None  # another writer's file: never ours to delete
        yield tmp
        os.replace(tmp, out)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_bytes_atomic(out, data) -> Path:
    """Write `data` to `out` through a temporary file and a rename.

    Args:
        out: destination path.
        data: bytes to write.

    Example:
    ```python
    write_bytes_atomic("model.tflite", flatbuffer_bytes)
    ```
    """
    with atomic_output(out) as tmp:
        tmp.write_bytes(data)
    return Path(out)


def write_text_atomic(out, text) -> Path:
    """Write `text` (UTF-8) to `out` through a temporary file and a rename.

    Example:
    ```python
    write_text_atomic("metrics.json", json.dumps(scores))
    ```
    """
    with atomic_output(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


def write_json_atomic(out, data, indent=2) -> Path:
    """Write `data` as JSON to `out` through a temporary file and a rename.

    NaN and infinities (Python or numpy floats) are written as `null`: they are not JSON,
    and `json.dumps` would write `NaN`, which strict readers refuse. Numpy scalars are
    written as numbers.

    Example:
    ```python
    write_json_atomic("metrics.json", {"iou": 0.79, "loss": float("nan")})   # "loss": null
    ```
    """
    import json
    import math

    def finite_or_null(value) -> Any:
        if isinstance(value, dict):
            return {key: finite_or_null(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite_or_null(item) for item in value]
        if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return write_text_atomic(out, json.dumps(finite_or_null(data), indent=indent, allow_nan=False))
