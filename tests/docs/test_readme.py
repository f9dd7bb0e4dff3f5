"""The README stays short, free of run histories, and its figures come from the results JSON."""

import json
import re
from pathlib import Path

from keras_unet.benchmarks import results_pages

ROOT = Path(__file__).resolve().parents[2]

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_readme_names_no_issues():
    assert not re.search(r"\bissue \d+|\bissues? #\d+|[\w-]+/[\w-]+#\d+", README)


def test_the_two_commands_are_unchanged():
    assert ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[cpu]" && keras-unet demo'
            in README)
    assert "```bash\nbash .ci/run\n```" in README  # the test command is what CI runs


def test_results_table_matches_the_demo_json():
    demo = results_pages.load_result(results_pages.RESULTS_DIR / "demo.json")
    rows = {row["name"]: row for row in demo["report"]["rows"]}
    shown = [line for line in README.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(shown) == 3
    for line in shown:
        name, size, p50, speedup, iou, agreement = [cell.strip() for cell in line.strip("|").split("|")]
        row = rows[name]
        assert (size, p50, speedup, iou, agreement) == (
            f"{row['model_size_mb']:.1f}", f"{row['latency_p50_ms']:.1f}",
            f"{row['speedup_vs_reference']:.2f}x", f"{row['iou']:.3f}", f"{row['agreement_iou']:.3f}")
    assert f"one run, {demo['date']}" in README


def test_int8_summary_matches_the_matrix_json():
    matrix = json.loads((results_pages.RESULTS_DIR / "int8_matrix_nuclei.json").read_text())
    rows = [row for row in matrix["tables"][0]["rows"] if row["mode"] == "int8"]
    agreements = [row["agreement_iou"] for row in rows]
    ratios = [row["p50_ratio"] for row in rows]
    assert f"Keras {min(agreements):.3f}–{max(agreements):.3f}" in README
    assert f"IoU drop at most {max(row['iou_drop'] for row in rows):.3f}" in README
    assert f"{min(ratios):.2f}–{max(ratios):.2f}x Keras' latency" in README
    assert f"({len(rows) // 2} models" in README or "eight models" in README


def test_readme_links_point_at_files():
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png))(?:#[\w-]+)?\)", README):
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"
