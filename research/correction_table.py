"""Issue 22's closed-loop correction table from several sweep runs: each run of `vla-eval sweep
--config config/sweep_correction.yaml` cut to one slice (a method, pattern, factor dtype or
task) writes its own results JSON; this unites them by variant name and task
(`evaluation.report.merge_results`), refuses parts made from other weights or scenes, and writes
the merged JSON, the per-task markdown table (`correction_markdown`) and the plot of success
against stored correction bytes (`correction_plot`). docs/correction.md quotes its output:

    .venv/bin/python research/correction_table.py results/correction_closed_loop.json \\
        runs/s4/u70_mag.json runs/s4/int8_mag.json ... \\
        --out results/correction_closed_loop.json --plot docs/img/correction_closed_loop.png \\
        --note "what ran where"

The first part's config is kept; `slices` lists each part's command-line cut (its config's
methods, patterns, ranks, corrections, factor dtypes, tasks, calibration scenes, damping).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vla_pruned_ros.evaluation.report import correction_markdown, correction_plot, merge_results
from vla_pruned_ros.paths import atomic_write

SLICE_KEYS = ("methods", "patterns", "ranks", "pattern_ranks", "corrections", "factor_dtype",
              "tasks", "calib_scenes", "damp", "conv")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", type=Path, nargs="+", help="sweep results JSONs, first wins")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--note", default="", help="appended to the merged JSON's note")
    args = parser.parse_args()
    parts = [json.loads(p.read_text()) for p in args.parts]
    merged = merge_results(parts)
    slices = []
    for path, part in zip(args.parts, parts, strict=True):
        cut = {k: part["config"].get(k) for k in SLICE_KEYS}
        slices += part.get("slices") or [{"from": str(path), **cut}]
    notes = [p.get("note", "") for p in parts if p.get("note")] + [args.note]
    merged.update(slices=slices, note=" ".join(n for n in notes if n))
    atomic_write(args.out, json.dumps(merged, indent=1))
    correction_plot(merged, args.plot)
    print(correction_markdown(merged))
    print(f"\nwritten: {args.out}, {args.plot}")


if __name__ == "__main__":
    main()
