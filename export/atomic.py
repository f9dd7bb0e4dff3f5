"""Write a file next to its destination, then rename it into place.

A failed or rejected export must leave any earlier file at the destination untouched, so
every exporter writes to a temporary name in the destination folder (same file system, so
`os.replace` is atomic) and renames only once the new file passed verification.

Example:
```python
from export.atomic import atomic_output

with atomic_output("model.tflite") as tmp_path:
    tmp_path.write_bytes(b"...")   # raise here and model.tflite is left as it was
```
"""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(out):
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".tmp{out.suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(out, data):
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
