"""Two rows of a sweep table on the same scenes: the scenes only one of them solved, and an exact
two-sided sign (McNemar) test on those. Equal success rates can hide different scenes, and two
rates' intervals overlapping says little when the scenes are shared. docs/correction.md and
docs/results.md quote its output for issue 22:

    .venv/bin/python research/paired_rows.py results/correction_closed_loop.json manip \\
        magnitude_2:4_r2_act,magnitude_2:4_r8 wanda_2:4_r2_act,wanda_2:4_r8

A row from another results file of the same scenes is NAME@FILE (the 64-scene calibration probe's
rows against the table's: `magnitude_2:4_r4_act@runs/s4/c64_mag.json,magnitude_2:4_r4`).
"""

from __future__ import annotations

import json
import sys
from math import comb


def sign_test(only_first: int, only_second: int) -> float:
    """Exact two-sided p of a split this uneven (or more) among the discordant scenes."""
    n, k = only_first + only_second, min(only_first, only_second)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def _episodes(table: dict, task: str, name: str) -> dict[int, bool]:
    """Success per scene of row `name` (NAME@FILE: of that file instead of `table`)."""
    if "@" in name:
        name, path = name.split("@", 1)
        with open(path) as f:
            table = json.load(f)
    rows = {v["name"]: v["tasks"][task]["episodes"] for v in table["variants"]
            if task in v["tasks"]}  # fmt: skip
    return {e["seed"]: e["success"] for e in rows[name]}


def paired(table: dict, task: str, first: str, second: str) -> tuple[int, int, float]:
    a, b = _episodes(table, task, first), _episodes(table, task, second)
    if a.keys() != b.keys():
        raise SystemExit(f"{first} and {second} ran different scenes: not a paired comparison")
    only_a = sum(a[s] and not b[s] for s in a)
    only_b = sum(b[s] and not a[s] for s in a)
    return only_a, only_b, sign_test(only_a, only_b)


if __name__ == "__main__":
    path, task, *pairs = sys.argv[1:]
    with open(path) as f:
        table = json.load(f)
    for pair in pairs:
        first, second = pair.split(",")
        only_a, only_b, p = paired(table, task, first, second)
        print(
            f"{first} vs {second}: only first {only_a}, only second {only_b}, sign test p = {p:.3f}"
        )
