"""Design notes are dated, listed, and every note the code or the docs cite exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "docs" / "notes"
CITED = re.compile(r"docs/notes/([\w.-]+\.md)")


def test_notes_are_dated_and_listed():
    index = (NOTES / "index.md").read_text(encoding="utf-8")
    notes = [path for path in NOTES.glob("*.md") if path.name != "index.md"]
    assert notes
    for path in notes:
        assert re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9.-]+\.md$", path.name), f"{path.name}: not YYYY-MM-DD-topic.md"
        assert f"({path.name})" in index, f"{path.name} is missing from docs/notes/index.md"


def test_every_cited_note_exists():
    sources = [*ROOT.glob("keras_unet/**/*.py"), *ROOT.glob("export/**/*.py"), *ROOT.glob("benchmarks/**/*.py"),
               ROOT / "README.md"]
    for source in sources:
        for name in CITED.findall(source.read_text(encoding="utf-8")):
            assert (NOTES / name).exists(), f"{source.relative_to(ROOT)} cites docs/notes/{name}, which does not exist"
