"""Loaded at start-up by a Python process that a fast-lane test starts (see fast_lane_guard).

Notes the process in the file named by KERAS_UNET_TEST_TF_REPORT when it first imports
TensorFlow, then hands over to any other `sitecustomize` on the path (a test may bring its
own) and takes this folder off `sys.path`, so the process otherwise runs as it would.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPORT = os.environ.get("KERAS_UNET_TEST_TF_REPORT")


class _NoteTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            sys.meta_path.remove(self)
            with open(_REPORT, "a", encoding="utf-8") as report:
                report.write(" ".join(sys.orig_argv if hasattr(sys, "orig_argv") else sys.argv)[:300]
                             .replace("\n", " ") + "\n")
        return None


if _REPORT:
    sys.meta_path.insert(0, _NoteTensorFlow())

sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
_THIS = sys.modules.pop("sitecustomize")
try:
    import sitecustomize  # noqa: F401  (the next one on the path, if any)
except ImportError:
    sys.modules["sitecustomize"] = _THIS  # the import machinery reads it back
