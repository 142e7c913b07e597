"""The committed embedded VLA: it loads from the package, stays within its size budget, and
drives both simulated tasks in closed loop (a handful of held-out episodes, loose floor)."""

from __future__ import annotations

import pytest

from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_jobs
from vla_pruned_ros.models.embedded import DEFAULT_WEIGHTS, load_embedded

EPISODES = 6


def test_committed_weights_are_small_and_load() -> None:
    weights = DEFAULT_WEIGHTS / "model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    assert (DEFAULT_WEIGHTS / "MODEL_CARD.md").is_file()
    model = load_embedded()
    assert set(model.config.action_dims) == {"nav", "manip"}


@pytest.mark.parametrize("task", ["nav", "manip"])
def test_embedded_policy_solves_some_held_out_episodes(task: str) -> None:
    jobs = [EvalJob(task, "embedded", seed) for seed in heldout_seeds(500, EPISODES)]
    records = list(run_jobs(jobs, workers=0))
    successes = sum(r["success"] for r in records)
    assert successes >= 2, [(r["seed"], r["success"], r["distance_to_goal"]) for r in records]
