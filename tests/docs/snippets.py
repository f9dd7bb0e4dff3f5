"""Find the runnable Python blocks of the Markdown documentation.

A fenced ```python block runs as a test when the line before it (blank lines aside) is a marker:

    <!-- runnable -->              fast lane
    <!-- runnable slow -->         trains or converts: marked slow
    <!-- runnable slow epochs=1 --> the same, with every `epochs=N` in the block set to 1
    <!-- runnable slow size=32 -->  the same, with every square size `(N, N` set to `(32, 32`

The blocks of one page run in order in one fresh Python process, in an empty temporary folder,
so a later block can use what an earlier one made.
"""

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!--\s*runnable(?P<options>[^>]*)-->\s*$")
FENCE = re.compile(r"^```python\s*$")


@dataclass
class Snippet:
    path: Path
    line: int
    code: str
    slow: bool


def pages():
    """README.md and every hand-written page under docs/ (generated pages have no markers)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets(path):
    """The runnable blocks of one page, in order; a marker not followed by a python block raises."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        match = MARKER.match(lines[index].strip())
        index += 1
        if not match:
            continue
        options = match.group("options").split()
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index >= len(lines) or not FENCE.match(lines[index]):
            raise ValueError(f"{path}:{index}: expected a ```python block after the runnable marker")
        start = index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(lines[start:end]) + "\n"
        epochs = next((option.split("=", 1)[1] for option in options if option.startswith("epochs=")), None)
        if epochs is not None:
            code = re.sub(r"\bepochs=\d+", f"epochs={epochs}", code)
        size = next((option.split("=", 1)[1] for option in options if option.startswith("size=")), None)
        if size is not None:
            code = re.sub(r"\((\d+), \1\b", f"({size}, {size}", code)
        found.append(Snippet(Path(path), start + 1, code, "slow" in options))
        index = end + 1
    return found
