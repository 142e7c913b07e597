"""How much the manipulation expert's label changes when the pusher moves by about one image
pixel (1.45 cm), over the states of noisy expert episodes: the figure MODEL_CARD.md quotes for
the routing and the smooth expert. Labels that jump between neighbouring pixels look like
several modes to a policy that sees the scene at 64x64.

    .venv/bin/python scripts/expert_label_jumps.py routing
"""

from __future__ import annotations

import sys

import numpy as np

from vla_pruned_ros.sim import make_task

PIXEL = 0.0145


def main(expert: str, episodes: int = 40) -> None:
    import mujoco  # after the sim package, which sets MUJOCO_GL

    task = make_task("manip", expert=expert)
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    moves = PIXEL * np.stack([np.cos(angles), np.sin(angles)], 1)
    jumps = []
    for seed in range(episodes):
        task.reset(seed)
        noisy = seed % 2 == 0
        while True:
            label, tip = task.expert_action(), task.tip()
            changes = []
            for move in moves:
                task.data.qpos[task._tip_qpos] = tip + move
                mujoco.mj_forward(task.model, task.data)
                changes.append(np.linalg.norm(task.expert_action() - label) / 0.3)
            task.data.qpos[task._tip_qpos] = tip
            mujoco.mj_forward(task.model, task.data)
            jumps.append(max(changes))
            action = label + (rng.normal(0, 0.3, 2) * 0.3 if noisy else 0)
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
