"""Why does a model fail manipulation episodes? Replays the episodes of a `vla-eval sim --json`
result (same seed, same instruction, so the same rollout) and, per episode, says whether the
pusher reached the named block, how far each block moved, and how the policy's actions compare
with what the smooth expert would do in the very states the policy reached (speed, direction).
It also says how often the expert would be walking around the block (routing) rather than
pushing along the line, and how often the policy opposes it in each case. The model card's
failure analysis comes from this script.

    .venv/bin/python scripts/manip_failures.py results/embedded_manip.json --which failed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vla_pruned_ros.models.embedded import EmbeddedPolicy, load_embedded
from vla_pruned_ros.sim.manip import BLOCKS, ManipTask


def replay(policy: EmbeddedPolicy, task: ManipTask, seed: int, instruction: str) -> dict:
    """One episode driven by the policy, with the expert's label computed (not executed) at each
    state."""
    obs = task.reset(seed, instruction=instruction)
    start = {c: task.block_xy(c) for c in BLOCKS}
    closest, speed, expert_speed, cosine, pushing = np.inf, [], [], [], []
    for _ in range(task.max_steps):
        action, label = policy.predict(obs.image, task.instruction), task.expert_action()
        speed.append(float(np.linalg.norm(action)))
        expert_speed.append(float(np.linalg.norm(label)))
        cosine.append(float(action @ label) / (speed[-1] * expert_speed[-1] + 1e-9))
        pushing.append(task.push_weight())
        closest = min(closest, float(np.linalg.norm(task.tip() - task.block_xy(task.target))))
        result = task.step(action)
        obs = result.observation
        if result.done:
            break
    moved = {c: float(np.linalg.norm(task.block_xy(c) - start[c])) for c in BLOCKS}
    return {
        "seed": seed,
        "success": task.success,
        "end_distance": task.block_distance(),
        "closest_tip_to_block": closest,
        "named_block_moved": moved[task.target],
        "other_block_moved": max(v for c, v in moved.items() if c != task.target),
        "policy_speed": float(np.mean(speed)),
        "expert_speed": float(np.mean(expert_speed)),
        "direction_cosine": float(np.mean(cosine)),
        "share_opposed": float(np.mean(np.array(cosine) < 0)),
        # mostly routing: the expert's label is more walking-around than pushing
        "share_expert_routing": float(np.mean(np.array(pushing) < 0.5)),
        "share_opposed_while_pushing": _share(np.array(cosine) < 0, np.array(pushing) >= 0.5),
        "share_opposed_while_routing": _share(np.array(cosine) < 0, np.array(pushing) < 0.5),
    }


def _share(event: np.ndarray, where: np.ndarray) -> float:
    """Share of the `where` steps with `event`; NaN when there are none (medians skip them)."""
    return float(event[where].mean()) if where.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a vla-eval sim --json output (manip)")
    parser.add_argument("--model", default="", help="weights folder (default: the result's)")
    parser.add_argument("--which", choices=("failed", "succeeded"), default="failed")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--json", type=Path, help="write the per-episode rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = json.loads(args.result.read_text())
    if result["task"] != "manip":
        parser.error(f"{args.result} is a {result['task']!r} result; this script reads manip")
    model = args.model or result["model"]
    policy = EmbeddedPolicy(load_embedded(None if model == "embedded" else Path(model)), "manip")
    wanted = args.which == "succeeded"
    episodes = [
        e for e in result["episodes"] if e["success"] == wanted and e["phrasing"] == "train"
    ][: args.limit]
    task = ManipTask(expert="smooth")
    rows = [replay(policy, task, e["seed"], e["instruction"]) for e in episodes]
    agree = sum(r["success"] == wanted for r in rows)
    median = {k: float(np.nanmedian([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    summary = {
        "episodes": len(rows),
        "replays_agreeing_with_the_result": agree,
        "reached_named_block": sum(r["closest_tip_to_block"] < 0.06 for r in rows),
        "named_block_moved_over_5cm": sum(r["named_block_moved"] > 0.05 for r in rows),
        "other_block_moved_over_5cm": sum(r["other_block_moved"] > 0.05 for r in rows),
        "median": {k: round(v, 3) for k, v in median.items() if k != "success"},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "episodes": rows}, indent=1))


if __name__ == "__main__":
    main()
