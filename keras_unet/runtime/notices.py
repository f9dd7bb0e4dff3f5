"""Warnings said once per process (per file and kind), so a loop over images stays readable.

Example:
```python
from keras_unet.runtime.notices import warn_once

warn_once(("no-metadata", "m.tflite"), "m.tflite: no keras_unet metadata in this file.")
```
"""

import warnings

_WARNED: set = set()


def warn_once(key, message, stacklevel=3) -> None:
    """`warnings.warn(message, UserWarning)` the first time `key` is seen in this process.

    Args:
        key: any hashable, e.g. `("loop", path)`.
        message: the warning text.
        stacklevel: as for `warnings.warn` (3: the caller of the function that warns).

    Example:
    ```python
    warn_once(("range", path), f"{path}: images look like [0, 1] floats.")
    ```
    """
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, UserWarning, stacklevel=stacklevel)


def warned(key) -> bool:
    """True when `warn_once(key, ...)` has already warned in this process.

    Example:
    ```python
    if not warned(("range", path)):
        ...  # the check is only worth its cost until it has warned
    ```
    """
    return key in _WARNED
