"""How much the manipulation expert's label changes when the pusher moves by about one image
pixel (1.45 cm), over the states of noisy expert episodes: the figure MODEL_CARD.md quotes for
the routing and the smooth expert (sim/manip_experts.label_jump, l2 norm). Labels that jump between
neighbouring pixels look like several modes to a policy that sees the scene at 64x64.

    .venv/bin/python research/expert_label_jumps.py routing
"""

from __future__ import annotations

import sys

import numpy as np

from vla_pruned_ros.sim import make_task
from vla_pruned_ros.sim.manip_experts import label_jump


def main(expert: str, episodes: int = 40) -> None:
    task = make_task("manip", expert=expert)
    rng = np.random.default_rng(0)
    jumps = []
    for seed in range(episodes):
        task.reset(seed)
        noisy = seed % 2 == 0
        while True:
            jumps.append(label_jump(task, norm="l2"))
            action = task.expert_action() + (rng.normal(0, 0.3, 2) * 0.3 if noisy else 0)
            if task.step(action).done:
                break
    j = np.asarray(jumps)
    print(f"{expert}: {len(j)} states; label change under a 1-px move (share of the bound):")
    print("  median / 90th percentile:", np.round(np.percentile(j, [50, 90]), 3))
    print(
        "  share above 0.5 / 1.0 of the bound:",
        [round(float(np.mean(j > t)), 3) for t in (0.5, 1.0)],
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "routing")
