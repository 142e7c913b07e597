"""`vla-eval divergence` end to end on a tiny budget: structured artifacts that really shrink the
model, the probe and the criteria on the same scenes, table and plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from vla_pruned_ros.models.registry import load_policy

ROOT = Path(__file__).resolve().parents[2]


def test_divergence_sweep_builds_smaller_models_and_reports(tmp_path: Path) -> None:
    base = yaml.safe_load((ROOT / "config" / "divergence.yaml").read_text())
    p = base["vla_eval_divergence"]["ros__parameters"]
    p.update(
        tasks=["nav"], episodes=2, probe_modules=["heads"], criteria=["divergence", "random"],
        configs={"light": {"ffn": 0.25, "heads": 0.0}},
        artifacts_dir=str(tmp_path / "art"), cells_dir=str(tmp_path / "cells"),
        json=str(tmp_path / "out" / "div.json"), markdown=str(tmp_path / "out" / "div.md"),
        plots_dir=str(tmp_path / "out"),
    )  # fmt: skip
    config = tmp_path / "divergence.yaml"
    config.write_text(yaml.safe_dump(base))
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.eval", "divergence", "--config", str(config)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "div.json").read_text())
    rows = {v["name"]: v for v in result["variants"]}
    assert list(rows) == ["dense", "probe_heads_high", "probe_heads_low", "light_divergence",
                          "light_random"]  # fmt: skip
    dense = rows["dense"]["params"]
    assert rows["probe_heads_high"]["removed"] == {"ffn": 0, "heads": 36}
    assert rows["light_divergence"]["removed"] == {"ffn": round(0.25 * 6 * 1536), "heads": 0}
    # equal removal, equal size, whichever criterion chose the units
    assert rows["light_divergence"]["params"] == rows["light_random"]["params"] < dense
    md = (tmp_path / "out" / "div.md").read_text()
    assert "| light_random |" in md and "divergence.png" in md
    assert (tmp_path / "out" / "divergence.png").stat().st_size > 10_000

    policy = load_policy(rows["light_divergence"]["artifact"], "nav", mode="packed")
    assert policy.info.variant == "structured"
    frame = np.zeros((64, 64, 3), np.uint8)
    assert np.all(np.isfinite(policy.predict(frame, "go to the red marker")))
