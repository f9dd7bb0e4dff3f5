"""`mkdocs build --strict` passes: no broken link, missing API page or warning (needs the [docs] extra)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason='the site needs pip install -e ".[docs]"')
    pytest.importorskip("mkdocstrings_handlers.python", reason='the site needs pip install -e ".[docs]"')
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "export" / "index.html").exists()
