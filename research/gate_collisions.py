"""Why does the direction-aware gate collide more than no gate on manipulation (issue 18)?

Runs held-out manipulation scenes in-process (the shipped embedded VLA, `vla-eval sim`'s loop)
with no gate and with the gate in the loop (`--gate`), and for every collision the task counts
(one per contact onset, the named block excluded) logs what the gate saw and did:

- whether the contact was still there at the control step's end (all the gate is fed by
  `SimGate.observe`) or only during the physics substeps;
- how many substeps it lasted, and whether the same body pair touched in the step before
  (a contact that flickers between steps counts as a new collision each time);
- the policy's command and the gated one, each as its component into the contact normal
  (from the pusher into the obstacle; > 0 drives into it) and the gate's reason;
- whether the gate already remembered a contact point within 5 cm (a re-collision with a
  known obstacle) and whether the other body was moving (a pushed block).

    .venv/bin/python research/gate_collisions.py --episodes 60 --gate direction

The per-substep contacts are read by wrapping the task's own substep collector on the instance
(a probe; the product code is not changed).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from vla_pruned_ros.evaluation.closed_loop import heldout_seeds  # noqa: E402
from vla_pruned_ros.evaluation.gated_loop import SimGate  # noqa: E402
from vla_pruned_ros.models.registry import load_policy  # noqa: E402
from vla_pruned_ros.monitor.detectors import robot_contacts  # noqa: E402
from vla_pruned_ros.sim import make_task  # noqa: E402


def _substep_contacts(task, log: list) -> None:
    """Wrap the task's substep collector so each substep's robot contacts (pair, force, point,
    normal from the robot into the other body) are appended to `log[-1]`."""
    original = task._collect_contacts
    force = np.zeros(6)

    def collect(touching):
        original(touching)
        if not log:  # reset's own look at the contacts, before the first step
            return
        d, m = task.data, task.model
        now = []
        for i in range(d.ncon):
            c = d.contact[i]
            a = task._geom_body[c.geom1]
            b = task._geom_body[c.geom2]
            kept = robot_contacts([(a, b, 0.0)], task.robot_bodies, task.allowed_contacts())
            if not kept:
                continue
            mujoco.mj_contactForce(m, d, i, force)
            n = np.array(c.frame[:3])
            if kept[0][0] != a:  # MuJoCo's normal points from geom1 to geom2
                n = -n
            now.append((kept[0][1], abs(float(force[0])), c.pos[:2].copy(), n[:2].copy()))
        log[-1].append(now)

    task._collect_contacts = collect


def _into(v: np.ndarray, n: np.ndarray) -> float:
    """The component of a planar command along the unit normal (> 0: into the obstacle)."""
    norm = float(np.linalg.norm(n))
    return float(np.dot(v, n) / norm) if norm > 0 else math.nan


def run(seed: int, gate_mode: str, task, policy, substeps: list) -> tuple[dict, list[dict]]:
    obs = task.reset(seed)
    substeps.clear()
    gate = SimGate(task, gate_mode) if gate_mode != "none" else None
    rows = []
    prev_pairs: set[str] = set()
    while True:
        action = policy.predict(obs.image, obs.instruction)
        if not np.all(np.isfinite(action)):
            break
        sent = gate.filter(action) if gate is not None else np.asarray(action)
        reason = gate.monitor.zones.reason if gate is not None else ""
        stopped = gate is not None and not np.any(sent) and np.any(action)
        known = gate.monitor.zones.contacts.points(gate.monitor.zones.pose) if gate else []
        tip = task.tip()
        substeps.append([])
        result = task.step(sent)
        if gate is not None:
            gate.observe()
        steps = substeps[-1]
        pairs_end = {o for o, *_ in steps[-1]} if steps else set()
        pairs_step = {o for s in steps for o, *_ in s}
        for e in result.events:
            if e["category"] != "collision":
                continue
            other = e["key"].split("|", 1)[1]
            hit = [(k, s) for k, sub in enumerate(steps) for s in sub if s[0] == other]
            first_k, (_, f, pos, n) = max(hit, key=lambda h: h[1][1]) if hit else (-1, (0, 0, 0, 0))
            body_speed = 0.0
            if other.startswith("block_"):
                body_speed = task.block_speed(other.removeprefix("block_"))
            rel = np.asarray(pos) - tip if hit else np.zeros(2)
            rows.append(
                {
                    "seed": seed,
                    "gate": gate_mode,
                    "step": task.steps,
                    "other": other,
                    "at_step_end": other in pairs_end,
                    "substeps_in_contact": sum(any(s[0] == other for s in sub) for sub in steps),
                    "first_substep": min((k for k, _ in hit), default=-1),
                    "touched_step_before": other in prev_pairs,
                    "policy_into": _into(np.asarray(action), n) if hit else math.nan,
                    "sent_into": _into(np.asarray(sent), n) if hit else math.nan,
                    "policy_speed": float(np.linalg.norm(action)),
                    "sent_speed": float(np.linalg.norm(sent)),
                    "gate_reason": reason,
                    "gate_stopped": bool(stopped),
                    "known_point_near": any(math.dist(p, rel) < 0.05 for p in known),
                    "other_speed": body_speed,
                    "force": float(f),
                }
            )
        prev_pairs = pairs_step
        obs = result.observation
        if result.done:
            break
    m = task.metrics()
    return {"seed": seed, "gate": gate_mode, "success": m["success"],
            "collisions": m["collisions"]}, rows  # fmt: skip


def summarize(episodes: list[dict], rows: list[dict]) -> str:
    out = []
    for g in sorted({e["gate"] for e in episodes}):
        ep = [e for e in episodes if e["gate"] == g]
        rs = [r for r in rows if r["gate"] == g]
        n = len(rs) or 1

        def share(key, rs=rs, n=n):
            return (
                f"{sum(bool(r[key]) for r in rs)} ({100 * sum(bool(r[key]) for r in rs) / n:.0f} %)"
            )

        into = [r for r in rs if r["sent_into"] > 1e-3]
        out += [
            f"gate {g}: {len(ep)} episodes, success {sum(e['success'] for e in ep)}, "
            f"collisions {sum(e['collisions'] for e in ep)} in "
            f"{sum(e['collisions'] > 0 for e in ep)} episodes",
            f"  still touching at the step's end (what the gate is fed): {share('at_step_end')}",
            f"  same pair touched in the step before (flicker / re-touch): "
            f"{share('touched_step_before')}",
            f"  a remembered contact point within 5 cm: {share('known_point_near')}",
            f"  gated command still drove into the normal (> 1 mm/s): {len(into)}",
            f"  gate stopped the command whole: {share('gate_stopped')}",
            f"  other body moving > 0.02 m/s: {sum(r['other_speed'] > 0.02 for r in rs)}",
            f"  by other body: {dict(collections.Counter(r['other'] for r in rs))}",
            f"  gate reasons: {dict(collections.Counter(r['gate_reason'][:24] for r in rs))}",
        ]
        if rs:
            sub = [r["substeps_in_contact"] for r in rs]
            out.append(f"  substeps in contact (median, max): {np.median(sub):.0f}, {max(sub)}")
            pi = np.array([r["policy_into"] for r in rs])
            si = np.array([r["sent_into"] for r in rs])
            out.append(
                f"  command into the normal, m/s (median): policy {np.nanmedian(pi):.3f}, "
                f"sent {np.nanmedian(si):.3f}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--gate", nargs="+", default=["none", "direction"])
    parser.add_argument("--json", type=Path, help="per-collision rows")
    args = parser.parse_args(argv)
    policy = load_policy("embedded", "manip")
    episodes, rows = [], []
    with make_task("manip") as task:
        substeps: list[list] = []
        _substep_contacts(task, substeps)
        for seed in heldout_seeds(args.first, args.episodes):
            for g in args.gate:
                e, r = run(seed, g, task, policy, substeps)
                episodes.append(e)
                rows += r
    print(summarize(episodes, rows))
    if args.json:
        args.json.write_text(json.dumps({"episodes": episodes, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
