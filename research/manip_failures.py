"""Why does a model fail manipulation episodes? Replays the episodes of a `vla-eval sim --json`
result (same seed, same instruction, so the same rollout) and, per episode, says whether the
pusher reached the named block, how far each block moved, and how the policy's actions compare
with what the smooth expert would do in the very states the policy reached (speed, direction).
It also says how often the expert would be walking around the block (routing) rather than
pushing along the line, and how often the policy opposes it in each case; and, where the pusher
touches the block while the expert would be walking around it, whether each of them moves
toward the block or away from it (radial speed, + is away). `--takeover 20,40` replays each
episode with the expert taking over after that many policy steps: whether the states the policy
reached can still be solved. The model card's failure analysis comes from this script.

    .venv/bin/python research/manip_failures.py results/embedded_manip.json --which failed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vla_pruned_ros.models.embedded import EmbeddedPolicy, load_embedded
from vla_pruned_ros.sim.manip import BLOCKS, HALF_BLOCK, TIP_R, ManipTask

CONTACT = HALF_BLOCK * 2**0.5 + TIP_R + 0.005  # tip centre this close to the block: touching


def replay(
    policy: EmbeddedPolicy, task: ManipTask, seed: int, instruction: str
) -> tuple[dict, dict]:
    """One episode driven by the policy, with the expert's label computed (not executed) at each
    state: the episode's row, and its paths for `plot_paths`."""
    obs = task.reset(seed, instruction=instruction)
    start = {c: task.block_xy(c) for c in BLOCKS}
    tips, blocks = [task.tip()], [task.block_xy(task.target)]
    closest, speed, expert_speed, cosine, pushing = np.inf, [], [], [], []
    touching_radial: list[tuple[float, float]] = []  # (policy, expert) while walking around
    for _ in range(task.max_steps):
        action, label = policy.predict(obs.image, task.instruction), task.expert_action()
        rel, weight = tips[-1] - blocks[-1], task.push_weight()
        gap = float(np.linalg.norm(rel))
        if weight < 0.5 and gap < CONTACT:
            touching_radial.append((float(action @ rel) / gap, float(label @ rel) / gap))
        speed.append(float(np.linalg.norm(action)))
        expert_speed.append(float(np.linalg.norm(label)))
        cosine.append(float(action @ label) / (speed[-1] * expert_speed[-1] + 1e-9))
        pushing.append(weight)
        closest = min(closest, gap)
        result = task.step(action)
        obs = result.observation
        tips.append(task.tip())
        blocks.append(task.block_xy(task.target))
        if result.done:
            break
    moved = {c: float(np.linalg.norm(task.block_xy(c) - start[c])) for c in BLOCKS}
    paths = {
        "seed": seed, "target": task.target, "success": task.success,
        "end_distance": task.block_distance(), "tip": np.array(tips), "block": np.array(blocks),
        "target_pos": task.target_pos.copy(), "obstacle_pos": task.obstacle_pos.copy(),
        "others": {c: p for c, p in start.items() if c != task.target},
    }  # fmt: skip
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
        "steps_touching_while_routing": len(touching_radial),
        "radial_policy_touching": _mean([p for p, _ in touching_radial]),
        "radial_expert_touching": _mean([e for _, e in touching_radial]),
    }, paths


def takeover(policy: EmbeddedPolicy, task: ManipTask, seed: int, instruction: str, k: int) -> bool:
    """The policy drives `k` steps, then the expert finishes the episode: can it?"""
    obs = task.reset(seed, instruction=instruction)
    for step in range(task.max_steps):
        action = policy.predict(obs.image, task.instruction) if step < k else task.expert_action()
        result = task.step(action)
        obs = result.observation
        if result.done:
            break
    return task.success


def plot_paths(replays: list[dict], out: Path) -> None:
    """Top view of up to eight replays (`replay`'s paths): the pusher's path, the named block's,
    the target (star), the obstacle (black disc) and the other blocks where they started."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, r in zip(axes.flat, replays[:8], strict=False):
        tip, block = r["tip"], r["block"]
        ax.set_axis_on()
        ax.plot(tip[:, 0], tip[:, 1], c="darkorange", lw=1, label="pusher")
        ax.plot(block[:, 0], block[:, 1], c=r["target"], lw=3, label=f"{r['target']} block")
        ax.plot(*tip[0], "o", c="darkorange")
        ax.plot(*r["target_pos"], "*", c="k", ms=14, label="target")
        ax.plot(*r["obstacle_pos"], "o", c="k", ms=10)
        for c, p in r["others"].items():
            ax.plot(*p, "s", c=c, ms=7)
        outcome = "success" if r["success"] else f"ends {r['end_distance'] * 100:.0f} cm off"
        ax.set_title(f"seed {r['seed']}: {outcome}", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xlim(-0.45, 0.45)
        ax.set_ylim(-0.45, 0.45)
    axes.flat[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Manipulation replays, top view (m)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"paths plotted in {out}")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _pooled_radial(rows: list[dict]) -> dict[str, float]:
    """Radial speeds while touching and walking around, weighted by steps over all episodes."""
    n = sum(r["steps_touching_while_routing"] for r in rows)
    out: dict[str, float] = {"steps": n}
    for who in ("policy", "expert"):
        total = sum(
            r[f"radial_{who}_touching"] * r["steps_touching_while_routing"]
            for r in rows
            if r["steps_touching_while_routing"]
        )
        out[who] = round(total / n, 3) if n else float("nan")
    return out


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
    parser.add_argument("--takeover", default="", help="e.g. 20,40,60: expert after K steps")
    parser.add_argument("--plot", type=Path, help="PNG of the first eight replays' paths")
    parser.add_argument(
        "--action-gain", type=float, default=None, help="default: the result's, else the model's"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = json.loads(args.result.read_text())
    if result["task"] != "manip":
        parser.error(f"{args.result} is a {result['task']!r} result; this script reads manip")
    model = args.model or result["model"]
    policy = EmbeddedPolicy(load_embedded(None if model == "embedded" else Path(model)), "manip")
    gain = args.action_gain if args.action_gain is not None else result.get("action_gain")
    if gain is not None:  # replay with the gain the episodes ran with, or the one asked for
        policy.set_action_gain(gain)
    wanted = args.which == "succeeded"
    episodes = [
        e for e in result["episodes"] if e["success"] == wanted and e["phrasing"] == "train"
    ][: args.limit]
    task = ManipTask(expert="smooth")
    replays = [replay(policy, task, e["seed"], e["instruction"]) for e in episodes]
    rows = [row for row, _ in replays]
    agree = sum(r["success"] == wanted for r in rows)
    median = {k: float(np.nanmedian([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    summary = {
        "episodes": len(rows),
        "replays_agreeing_with_the_result": agree,
        "reached_named_block": sum(r["closest_tip_to_block"] < 0.06 for r in rows),
        "named_block_moved_over_5cm": sum(r["named_block_moved"] > 0.05 for r in rows),
        "other_block_moved_over_5cm": sum(r["other_block_moved"] > 0.05 for r in rows),
        "median": {k: round(v, 3) for k, v in median.items() if k != "success"},
        "radial_touching_all_steps": _pooled_radial(rows),
    }
    for k in (int(x) for x in args.takeover.split(",") if x):
        solved = [takeover(policy, task, e["seed"], e["instruction"], k) for e in episodes]
        summary[f"expert_takes_over_after_{k}_steps"] = f"{sum(solved)}/{len(solved)} solved"
    print(json.dumps(summary, indent=1))
    if args.plot:
        plot_paths([paths for _, paths in replays], args.plot)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "episodes": rows}, indent=1))


if __name__ == "__main__":
    main()
