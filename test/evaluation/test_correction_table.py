"""Issue 22's table is several sweep slices merged (`report.merge_results`, run by
`research/correction_table.py`): a slice for one task beside another task's, the main table's
svd rows beside the correction sweep's. Merged on the two committed results files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vla_pruned_ros.evaluation.report import correction_markdown, merge_results

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict:
    return json.loads((ROOT / "results" / name).read_text())


def test_slices_of_other_tasks_merge_by_variant_and_task() -> None:
    correction, main = _load("correction_closed_loop.json"), _load("closed_loop.json")
    assert correction["config"]["tasks"] == ["manip"]  # the correction table ran manip only
    merged = merge_results([correction, main])
    assert merged["config"]["tasks"] == ["manip", "nav"]
    by_name = {v["name"]: v for v in merged["variants"]}
    first = {v["name"]: v for v in correction["variants"]}
    # a variant in both: the first part's manip cell, the second's nav cell
    r8 = by_name["magnitude_2:4_r8"]
    assert set(r8["tasks"]) == {"manip", "nav"}
    assert r8["tasks"]["manip"] == first["magnitude_2:4_r8"]["tasks"]["manip"]
    main_r8 = next(v for v in main["variants"] if v["name"] == "magnitude_2:4_r8")
    assert r8["tasks"]["nav"] == main_r8["tasks"]["nav"]
    # only in the correction part: manip only; the parts themselves are left as they were
    assert set(by_name["magnitude_2:4_r2_act"]["tasks"]) == {"manip"}
    assert set(first["magnitude_2:4_r8"]["tasks"]) == {"manip"}
    rows = {(r["task"], r["variant"]) for r in merged["rows"]}
    assert ("nav", "magnitude_2:4_r8") in rows and ("manip", "magnitude_2:4_r2_act") in rows
    assert len(rows) == len(merged["rows"])
    # each task's table lists the variants that ran it, and only those
    text = correction_markdown(merged)
    manip, nav = text.split("### navigation")
    assert "GLUESTICK r=2 (activation)" in manip and "GLUESTICK r=2 (activation)" not in nav
    assert "magnitude 2:4 + GLUESTICK r=64" in nav


def test_parts_about_other_scenes_or_weights_are_refused() -> None:
    correction, main = _load("correction_closed_loop.json"), _load("closed_loop.json")
    other = copy.deepcopy(main)
    other["config"]["episodes"] = 64
    with pytest.raises(ValueError, match="episodes: 64 vs 200"):
        merge_results([correction, other])
    other = copy.deepcopy(main)
    other["model_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="model_sha256"):
        merge_results([correction, other])


def test_the_research_command_writes_the_merged_table_and_plot(tmp_path: Path) -> None:
    out, plot = tmp_path / "merged.json", tmp_path / "img" / "correction.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "research" / "correction_table.py"),
         str(ROOT / "results" / "correction_closed_loop.json"),
         str(ROOT / "results" / "closed_loop.json"), "--out", str(out), "--plot", str(plot),
         "--note", "merged in a test"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    merged = json.loads(out.read_text())
    assert merged["config"]["tasks"] == ["manip", "nav"]
    assert merged["note"].endswith("merged in a test")
    assert merged["slices"][-1]["from"].endswith("closed_loop.json")
    assert plot.stat().st_size > 10_000
    assert "### navigation" in done.stdout
