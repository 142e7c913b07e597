"""Self-check of a task: run the scripted expert and print how well and how fast it does.

    python -m vla_pruned_ros.sim.check --task nav --episodes 50
    python -m vla_pruned_ros.sim.check --task manip --episodes 200 --first-seed 1000000 --noise 0.3
    python -m vla_pruned_ros.sim.check --task manip --expert smooth --episodes 200

With --noise the executed action is the expert's plus Gaussian noise (a share of the action
bound), as data collection does, which shows whether the expert recovers from the states a
perturbed rollout reaches. Steps/s counts physics + contact checks + render + expert.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from vla_pruned_ros.paths import atomic_write
from vla_pruned_ros.sim.registry import TASKS, make_task, task_class


def run_expert(
    task_name: str,
    episodes: int,
    first_seed: int = 0,
    phrasing: str = "train",
    noise: float = 0.0,
    image_size: int = 64,
    expert: str = "",
) -> dict[str, Any]:
    """Expert episodes on consecutive seeds; a summary plus the episode records. `expert`
    picks one of the task's experts ("" its default)."""
    records = []
    steps = 0
    options = {"expert": expert} if expert else {}
    with make_task(task_name, image_size=image_size, **options) as task:
        start = time.perf_counter()
        for seed in range(first_seed, first_seed + episodes):
            rng = np.random.default_rng(seed + 7_777_777)
            task.reset(seed, phrasing=phrasing)
            while True:
                action = task.expert_action()
                if noise > 0:
                    action = action + rng.normal(0.0, noise, action.shape) * task.action_high
                if task.step(action).done:
                    break
            records.append(task.metrics())
            steps += task.steps
        elapsed = time.perf_counter() - start
    n = max(len(records), 1)
    violations: Counter[str] = Counter()
    for r in records:
        violations.update(r["violations"])
    summary: dict[str, Any] = {
        "task": task_name,
        "episodes": len(records),
        "first_seed": first_seed,
        "phrasing": phrasing,
        "noise": noise,
        "expert": expert or "default",
        "success_rate": sum(r["success"] for r in records) / n,
        "unsafe_rate": sum(r["unsafe"] for r in records) / n,
        "violations_per_episode": {c: k / n for c, k in sorted(violations.items())},
        "mean_steps": steps / n,
        "steps_per_s": steps / elapsed if elapsed > 0 else float("nan"),
        "failed_seeds": [r["seed"] for r in records if not r["success"]],
        "unsafe_seeds": [r["seed"] for r in records if r["unsafe"]],
    }
    if task_name == "nav":
        summary["spl"] = sum(r["spl"] for r in records) / n
    return {"summary": summary, "episodes": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_pruned_ros.sim.check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--phrasing", choices=("train", "heldout"), default="train")
    parser.add_argument("--noise", type=float, default=0.0, help="action noise std / bound")
    parser.add_argument("--image-size", type=int, default=64)
    manip = ", ".join(task_class("manip").experts)
    parser.add_argument("--expert", default="", help=f"one of the task's experts (manip: "
                        f"{manip}); default: the task's own")  # fmt: skip
    parser.add_argument("--json", help="also write the summary and records here")
    args = parser.parse_args(argv)
    result = run_expert(
        args.task, args.episodes, args.first_seed, args.phrasing, args.noise, args.image_size,
        args.expert,
    )  # fmt: skip
    s = result["summary"]
    print(
        f"{s['task']}: {s['episodes']} episodes from seed {s['first_seed']} "
        f"(phrasing {s['phrasing']}, noise {s['noise']}, expert {s['expert']}, "
        f"{args.image_size}px)\n"
        f"  success {s['success_rate']:.3f}  unsafe {s['unsafe_rate']:.3f}  "
        f"mean steps {s['mean_steps']:.1f}  steps/s {s['steps_per_s']:.0f}"
        + (f"  SPL {s['spl']:.3f}" if "spl" in s else "")
        + f"\n  violations/episode {s['violations_per_episode']}"
        f"\n  failed seeds {s['failed_seeds'][:20]}  unsafe seeds {s['unsafe_seeds'][:20]}"
    )
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
