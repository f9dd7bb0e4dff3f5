"""The Python blocks of the README and the guides run as written (on small data)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snippets import ROOT, pages, snippets  # noqa: E402

PAGES = {path.relative_to(ROOT).as_posix(): snippets(path) for path in pages()}
RUNNABLE = {name: found for name, found in PAGES.items() if found}


def params():
    for name, found in sorted(RUNNABLE.items()):
        marks = [pytest.mark.slow] if any(snippet.slow for snippet in found) else []
        yield pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", params())
def test_page_snippets_run(name, tmp_path):
    found = RUNNABLE[name]
    code = "".join(f"# {name}:{snippet.line}\n{snippet.code}" for snippet in found)
    if any(snippet.slow for snippet in found):
        # Weights are initialised at random: a fixed seed makes a shortened training run, and
        # the int8 export verified after it, the same run every time.
        code = "import keras\nkeras.utils.set_random_seed(0)\n" + code
    script = tmp_path / "snippets.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    completed = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, f"{name}: a snippet failed\n{completed.stderr[-4000:]}"


def test_readme_and_guides_have_runnable_snippets():
    assert RUNNABLE.get("README.md"), "the README's Python quick start is not marked runnable"
    for guide in ("training", "export", "qat", "quantization-report"):
        assert RUNNABLE.get(f"docs/guides/{guide}.md"), f"docs/guides/{guide}.md has no runnable snippet"


def test_markers_need_a_python_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable -->\n\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="expected a ```python block"):
        snippets(page)


def test_epochs_and_size_options_shrink_the_run(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable slow epochs=1 size=32 -->\n```python\n"
                    "model = UNet(input_shape=(128, 128, 1))\nmodel.fit(x, epochs=20)\n```\n")
    (snippet,) = snippets(page)
    assert snippet.slow and snippet.line == 3
    assert snippet.code == "model = UNet(input_shape=(32, 32, 1))\nmodel.fit(x, epochs=1)\n"
