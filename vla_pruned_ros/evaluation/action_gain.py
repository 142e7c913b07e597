"""Calibrating a policy's action gain in closed loop, on calibration scenes only.

A regression head trained on demonstrations averages the labels of states its input cannot tell
apart, so its speeds come out shorter than the expert's and episodes run out of time. The gain
scales the normalised action before it is clipped to the bound (`EmbeddedVLAConfig.action_gain`).
It is chosen here on scenes from the training distribution that no training run collects from
(`calibration_seeds`), so held-out results stay an honest test of the chosen value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vla_pruned_ros.evaluation.closed_loop import (
    EvalJob,
    EvaluationFailed,
    calibration_seeds,
    run_cells,
    shared_model,
)
from vla_pruned_ros.evaluation.parallel import Parallel
from vla_pruned_ros.evaluation.stats import summarize


def calibrate(task: str, model: str, gains: Sequence[float], episodes: int, seed: int = 0,
              options: Parallel | None = None) -> dict[str, Any]:  # fmt: skip
    """One row per gain (the same calibration scenes for every gain; the gains are cells run
    side by side) and the chosen gain. Raises EvaluationFailed if a gain's cell failed."""
    if not gains or any(not g > 0 for g in gains):
        raise ValueError(f"gains must be positive and at least one, not {list(gains)}")
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    seeds = calibration_seeds(seed, episodes)
    where = shared_model(model)
    cells = {f"gain {i} ({float(g):g})": [EvalJob(task, where, s, action_gain=float(g))
                                          for s in seeds]
             for i, g in enumerate(gains)}  # fmt: skip
    done = run_cells(cells, options or Parallel(), f"{task} gains")
    rows = []
    for gain, (name, cell) in zip(gains, done.items(), strict=True):
        if cell.error is not None:
            raise EvaluationFailed(f"{name}: {cell.error}")
        s = summarize(cell.records)
        rows.append({"gain": float(gain), "episodes": s["episodes"], "success": s["success"],
                     "unsafe": s["unsafe"],
                     "collisions_per_episode": s["collisions_per_episode"]})  # fmt: skip
    return {"task": task, "model": model, "seed": seed, "scenes": "calibration",
            "seeds": [seeds[0], seeds[-1]], "rows": rows, "chosen": choose(rows)}  # fmt: skip


def choose(rows: Sequence[dict[str, Any]]) -> float:
    """The gain with the highest success; ties go to the lower unsafe rate, then the gain
    nearest 1 (the least change to what the model learnt)."""

    def key(row: dict[str, Any]) -> tuple[float, float, float]:
        return (round(row["success"]["rate"], 6), -round(row["unsafe"]["rate"], 6),
                -abs(row["gain"] - 1.0))  # fmt: skip

    return max(rows, key=key)["gain"]


def write_gain(folder: Path, task: str, gain: float) -> Path:
    """Store `gain` for `task` in a saved embedded model's config.json (weights untouched)."""
    from vla_pruned_ros.models.embedded import EmbeddedVLAConfig

    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (not a saved embedded model)")
    config = EmbeddedVLAConfig.from_json(path.read_text())
    if task not in config.action_dims:
        raise ValueError(f"{path} has no action head {task!r}; known: {sorted(config.action_dims)}")
    gains = {**config.action_gain, task: float(gain)}
    path.write_text(dataclasses.replace(config, action_gain=gains).to_json())
    return path


def plot(result: dict[str, Any], path: Path) -> Path:
    """Success and unsafe rate against the gain, with 95 % intervals and the chosen gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [r["gain"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, colour in (("success", "tab:green"), ("unsafe", "tab:red")):
        rates = [r[key]["rate"] for r in result["rows"]]
        lo = [r[key]["rate"] - r[key]["ci95"][0] for r in result["rows"]]
        hi = [r[key]["ci95"][1] - r[key]["rate"] for r in result["rows"]]
        ax.errorbar(gains, rates, yerr=[lo, hi], marker="o", capsize=3, color=colour, label=key)
    ax.axvline(result["chosen"], color="grey", linestyle="--", label=f"chosen {result['chosen']}")
    ax.set_xlabel("action gain")
    ax.set_ylabel("rate (calibration scenes)")
    ax.set_ylim(0, 1)
    episodes = result["rows"][0]["episodes"]
    ax.set_title(f"{result['task']}: {episodes} calibration scenes per gain")
    ax.legend(loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
