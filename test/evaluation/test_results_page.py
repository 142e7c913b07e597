"""`vla-eval sweep --render-only` rewrites a results page's table and keeps what people wrote
below its hand-written mark (docs/results.md carries the correction section and the spot check
there: a rerun of the main sweep used to erase them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from vla_pruned_ros.cli.eval import main
from vla_pruned_ros.evaluation.report import HAND_WRITTEN_MARK

ROOT = Path(__file__).resolve().parents[2]


def test_render_only_keeps_the_hand_written_part_and_replaces_the_table(tmp_path: Path) -> None:
    results = tmp_path / "closed_loop.json"
    shutil.copy(ROOT / "results" / "closed_loop.json", results)
    page = tmp_path / "results.md"
    notes = f"{HAND_WRITTEN_MARK}\n\n## What we make of it\n\nA person wrote this.\n"
    page.write_text("# an old table that must go\n\n" + notes)
    args = ["sweep", "--render-only", "--json", str(results), "--markdown", str(page),
            "--plots-dir", str(tmp_path / "img")]  # fmt: skip
    assert main(args) == 0
    text = page.read_text()
    assert "an old table that must go" not in text
    assert text.startswith("# Closed-loop results") and text.endswith(notes)
    assert main(args) == 0  # a second rewrite keeps the notes once
    assert page.read_text() == text
    page.write_text("# a page without the mark: zzyzx\n")  # the sweep's own page, replaced whole
    assert main(args) == 0
    assert "zzyzx" not in page.read_text()
