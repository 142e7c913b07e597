"""Issue 22's table is several sweep slices merged (`report.merge_results`, run by
`research/correction_table.py`): a navigation slice beside a manipulation one, a fp16 slice
beside an int8 one. Checked by cutting the committed table back into slices by task and merging
them again."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vla_pruned_ros.evaluation.report import _label, correction_markdown, merge_results

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "results" / "correction_closed_loop.json"


def _slice(table: dict, task: str) -> dict:
    """The part of `table` one sweep over `task` alone would have written."""
    part = copy.deepcopy(table)
    part["config"]["tasks"] = [task]
    part["variants"] = [{**v, "tasks": {task: v["tasks"][task]}}
                        for v in part["variants"] if task in v["tasks"]]  # fmt: skip
    part["rows"] = [r for r in part["rows"] if r["task"] == task]
    return part


def test_slices_of_other_tasks_merge_by_variant_and_task() -> None:
    table = json.loads(TABLE.read_text())
    assert table["config"]["tasks"] == ["manip", "nav"]
    manip, nav = _slice(table, "manip"), _slice(table, "nav")
    merged = merge_results([manip, nav])
    assert merged["config"]["tasks"] == ["manip", "nav"]
    original = {v["name"]: v for v in table["variants"]}
    by_name = {v["name"]: v for v in merged["variants"]}
    assert by_name.keys() == original.keys()
    for name, v in by_name.items():  # every cell back where it was, no task invented
        assert v["tasks"] == original[name]["tasks"]
    both = [n for n, v in original.items() if set(v["tasks"]) == {"manip", "nav"}]
    only_manip = [n for n, v in original.items() if set(v["tasks"]) == {"manip"}]
    assert both and only_manip  # the table has both kinds, or this test proves nothing
    assert {(r["task"], r["variant"]) for r in merged["rows"]} == {
        (r["task"], r["variant"]) for r in table["rows"]}  # fmt: skip
    assert len(merged["rows"]) == len(table["rows"])
    # the parts themselves are left as they were
    assert all(set(v["tasks"]) == {"manip"} for v in manip["variants"])
    # a part holding a cell already merged: the first part's cell wins
    changed = copy.deepcopy(nav)
    changed["variants"][0]["tasks"]["nav"]["summary"] = {"changed": True}
    again = merge_results([nav, changed])
    assert again["variants"][0]["tasks"]["nav"] == nav["variants"][0]["tasks"]["nav"]
    # each task's table lists the variants that ran it, and only those
    text = correction_markdown(merged)
    manip_text, nav_text = text.split("### navigation")
    label = f"| {_label(original[only_manip[-1]])} |"
    assert label in manip_text and label not in nav_text


def test_parts_about_other_scenes_weights_or_machines_are_refused() -> None:
    table = json.loads(TABLE.read_text())
    manip, nav = _slice(table, "manip"), _slice(table, "nav")
    other = copy.deepcopy(nav)
    other["config"]["episodes"] = 64
    with pytest.raises(ValueError, match="episodes: 64 vs 200"):
        merge_results([manip, other])
    other = copy.deepcopy(nav)
    other["model_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="model_sha256"):
        merge_results([manip, other])
    other = copy.deepcopy(nav)
    other["machine"]["torch_cpu_capability"] = "NO AVX"
    with pytest.raises(ValueError, match="other machines"):
        merge_results([manip, other])


def test_the_research_command_writes_the_merged_table_and_plot(tmp_path: Path) -> None:
    table = json.loads(TABLE.read_text())
    parts = []
    for task in ("manip", "nav"):
        parts.append(tmp_path / f"{task}.json")
        parts[-1].write_text(json.dumps(_slice(table, task)))
    out, plot = tmp_path / "merged.json", tmp_path / "img" / "correction.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "research" / "correction_table.py"), *map(str, parts),
         "--out", str(out), "--plot", str(plot), "--note", "merged in a test"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    merged = json.loads(out.read_text())
    assert merged["config"]["tasks"] == ["manip", "nav"]
    assert merged["note"].endswith("merged in a test")
    assert len(merged["variants"]) == len(table["variants"])
    assert plot.stat().st_size > 10_000
    assert "### navigation" in done.stdout and "### manipulation" in done.stdout
