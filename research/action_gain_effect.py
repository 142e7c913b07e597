"""What the calibrated action gain does to the manipulation commands, in the same states: the
policy's speed without and with its gain, the expert's label, how often the bound clips, and how
long episodes take. The model card's and README's speed figures come from this script.

    .venv/bin/python research/action_gain_effect.py [--episodes 40] [--first 1000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vla_pruned_ros.evaluation.closed_loop import calibration_seeds
from vla_pruned_ros.models.registry import load_policy
from vla_pruned_ros.sim import make_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--first", type=int, default=1000, help="first calibration scene offset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy, plain = load_policy(args.model, "manip"), load_policy(args.model, "manip")
    plain.set_action_gain(1.0)
    bound = np.array(policy.info.action_high)
    gain = policy.model.config.action_gain.get("manip", 1.0)
    raw, gained, expert, clipped, steps = [], [], [], 0, []
    with make_task("manip") as task:
        for seed in calibration_seeds(args.first, args.episodes):
            obs = task.reset(seed)
            while True:
                action = policy.predict(obs.image, obs.instruction)
                unscaled = plain.predict(obs.image, obs.instruction)
                raw.append(np.linalg.norm(unscaled))
                gained.append(np.linalg.norm(action))
                expert.append(np.linalg.norm(task.expert_action()))
                clipped += bool(np.any(np.abs(unscaled / bound * gain) > 1))
                result = task.step(action)
                obs = result.observation
                if result.done:
                    break
            steps.append(task.steps)
    print(f"{len(raw)} steps in {args.episodes} episodes; median speed without the gain "
          f"{np.median(raw):.3f}, with gain {gain:g} {np.median(gained):.3f}, expert label "
          f"{np.median(expert):.3f} m/s; clipped {clipped / len(raw):.1%}; "
          f"median episode {np.median(steps):g} steps")  # fmt: skip


if __name__ == "__main__":
    main()
