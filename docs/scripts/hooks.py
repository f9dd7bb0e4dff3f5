"""MkDocs hook: let mkdocstrings find `keras_unet.export` and `keras_unet.benchmarks` in the source tree.

The repository keeps `export/` and `benchmarks/` beside `keras_unet/` and setuptools maps them
under `keras_unet` (`package-dir`); griffe, which reads the source for the API pages, looks for
`keras_unet/export/` and would not find it. This hook lays out the installed package as links
to the repository's files in a temporary folder and points the Python handler at it, so the API
pages are read from the working tree with no import.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority

# Must match [tool.setuptools] package-dir in pyproject.toml.
MAPPED = {"export": "export", "benchmarks": "benchmarks"}


# Before mkdocstrings' own on_config, which creates the Python handler with its search paths.
@event_priority(100)
def on_config(config):
    repository = Path(config.config_file_path).resolve().parent
    staging = Path(tempfile.mkdtemp(prefix="keras_unet_docs_"))
    atexit.register(shutil.rmtree, staging, ignore_errors=True)
    package = staging / "keras_unet"
    package.mkdir()
    for entry in (repository / "keras_unet").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (package / name).symlink_to(repository / folder)
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {})["paths"] = [str(staging)]
    return config
