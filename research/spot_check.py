"""Issue 21's spot check: cells a fresh sweep wrote against the cached cells of the main table,
episode by episode on the same seeds (docs/results.md quotes it). Make the fresh cells with a copy
of config/sweep.yaml whose `cells_dir` is another folder, then:

    .venv/bin/vla-eval sweep --config runs/spot/sweep.yaml --episodes 20 --methods magnitude \\
        --ranks 8 --tasks manip
    .venv/bin/python research/spot_check.py runs/spot/cells runs/sweep/cells

`VLA_SPARSE_KERNEL=0` before the sweep runs the pure-PyTorch layers the cached cells were made
with; under the default the sparse kernel sums in another order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def compare(fresh: Path, cached: Path) -> None:
    for name in sorted(fresh.glob("*.json")):
        new = json.loads(name.read_text())
        old = json.loads((cached / name.name).read_text())
        strip = lambda key: {k: v for k, v in key.items() if k != "episodes"}  # noqa: E731
        n = len(new["episodes"])
        diffs = []
        for a, b in zip(new["episodes"], old["episodes"][:n], strict=True):
            if a["seed"] != b["seed"]:
                raise SystemExit(f"{name.name}: seeds {a['seed']} and {b['seed']} differ")
            d = {k: (a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)}
            if d:
                diffs.append((a["seed"], d))
        wins = (sum(e["success"] for e in new["episodes"]),
                sum(e["success"] for e in old["episodes"][:n]))  # fmt: skip
        print(f"{name.stem}: key match {strip(new['key']) == strip(old['key'])}, {n} episodes, "
              f"successes fresh/cached {wins}, {len(diffs)} differ")  # fmt: skip
        for seed, d in diffs:
            print("   ", seed, d)


if __name__ == "__main__":
    compare(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "runs/sweep/cells"))
