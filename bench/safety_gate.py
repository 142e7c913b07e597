"""Benchmark: collisions and success with the safety gate in the closed loop, direction-aware
zones on and off, on the same held-out scenes (issue 18: "13 collisions in one episode with the
gate on").

Why: the stop-and-hold gate stops on contact, releases after `stop_hold_s`, and the policy drives
into the same obstacle again; the direction-aware zones (monitor/zones.py) keep motion toward it
blocked and let motion away pass. This runs the same ROS-free `SafetyMonitor` the safety node
runs inside `vla-eval sim`'s loop (evaluation/gated_loop.py), with each task's
config/safety*.yaml, for three gates: none (the policy's actions as they are), stop (today's
gate: `zones.direction_aware: false`) and direction (`zones.direction_aware: true`).

    nice -n 10 python bench/safety_gate.py --episodes 200            # prints the table
    nice -n 10 python bench/safety_gate.py --episodes 200 --out bench/RESULTS_safety.md

(`bench/safety.py`, for stop times, did not exist when this was written; this is its gate
section, and `--out` replaces only this section of the results file.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_jobs  # noqa: E402
from vla_pruned_ros.evaluation.gated_loop import GATE_MODES  # noqa: E402
from vla_pruned_ros.evaluation.parallel import Parallel  # noqa: E402
from vla_pruned_ros.evaluation.stats import wilson_interval  # noqa: E402
from vla_pruned_ros.sim.registry import TASKS  # noqa: E402

SECTION = "## Collisions with the gate in the loop: direction-aware zones on and off"
READING = (
    "Collisions are counted by the task at every physics substep (one per contact onset, the "
    "named block excluded for manipulation); an episode is unsafe on any violation (for "
    "manipulation also joint-limit and object-speed ones, which the gate does not act on). "
    "'none' is the policy alone; 'stop' is the stop-and-hold gate (each touch stops, the hold "
    "ends, the policy drives in again); 'direction' keeps motion toward a touched or scanned "
    "obstacle blocked (nav: stop and slowdown zones from the 36-beam scan and contacts; manip: "
    "remembered contact surfaces from each contact's point and normal over the step's physics "
    "substeps, speed into them limited by time to collision and to a creep at contact, the "
    "pusher keeps the part along them). Episodes are chaotic: the same "
    "seed can differ between runs with different thread counts, so read totals, not seeds."
)


def parallel(workers: int) -> Parallel:
    """In this process for 0 or 1 workers, else that many one-CPU Ray tasks on this machine."""
    if workers <= 1:
        return Parallel(progress=False)
    return Parallel(ray="local", num_cpus=1.0, progress=False)


def summarize_gate(records: list[dict]) -> dict:
    """Success and collision figures of one task and gate."""
    n = len(records)
    ok = sum(r["success"] for r in records)
    unsafe = [r for r in records if r["unsafe"]]
    collided = [r for r in records if r["collisions"]]
    collisions = sum(r["collisions"] for r in records)
    lo, hi = wilson_interval(ok, n)
    return {
        "episodes": n,
        "success": ok / n if n else float("nan"),
        "success_ci": (lo, hi),
        "unsafe_episodes": len(unsafe),
        "collision_episodes": len(collided),
        "collisions": collisions,
        "collisions_per_unsafe": collisions / len(unsafe) if unsafe else 0.0,
        "collisions_per_colliding": collisions / len(collided) if collided else 0.0,
        "max_collisions": max((r["collisions"] for r in records), default=0),
        "gate_changed": sum(r.get("gate_changed", 0) for r in records),
    }


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| task | gate | episodes | success (95 % CI) | unsafe episodes | collisions | "
        "collisions / unsafe episode | collisions / colliding episode | most in one episode | "
        "actions changed by the gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, by_gate in results.items():
        for gate, s in by_gate.items():
            lo, hi = s["success_ci"]
            lines.append(
                f"| {task} | {gate} | {s['episodes']} | {100 * s['success']:.1f} % "
                f"({100 * lo:.1f}-{100 * hi:.1f}) | {s['unsafe_episodes']} | {s['collisions']} | "
                f"{s['collisions_per_unsafe']:.2f} | {s['collisions_per_colliding']:.2f} | "
                f"{s['max_collisions']} | {s['gate_changed']} |"
            )
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of a results file (other sections are kept)."""
    old = path.read_text() if path.exists() else "# Safety benchmarks\n"
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        tail = rest.split("\n## ", 1)
        old = head.rstrip("\n") + "\n" + ("\n## " + tail[1] if len(tail) > 1 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=200, help="held-out scenes per task")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--gates", nargs="+", default=list(GATE_MODES), choices=GATE_MODES)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--workers", type=int, default=2, help="0 or 1: in this process")
    parser.add_argument("--out", type=Path, help="results file to write this section into")
    parser.add_argument("--json", type=Path, help="per-episode records")
    args = parser.parse_args(argv)
    seeds = heldout_seeds(0, args.episodes)
    results: dict[str, dict[str, dict]] = {}
    records_out: list[dict] = []
    start = time.perf_counter()
    for task in args.tasks:
        jobs = [EvalJob(task, args.model, s, gate=g) for g in args.gates for s in seeds]
        records = list(run_jobs(jobs, parallel(args.workers)))
        for r in records:
            r.pop("step_latency_ms", None)
        records_out += records
        results[task] = {
            g: summarize_gate([r for r in records if r["gate"] == g]) for g in args.gates
        }
        print(f"{task}: {len(records)} episodes, {time.perf_counter() - start:.0f} s", flush=True)
    text = table(results)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records_out))
    if args.out:
        command = "nice -n 10 .venv/bin/python bench/safety_gate.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_section(
            args.out,
            f"{SECTION}\n\n{dt.date.today().isoformat()}, model `{args.model}`, held-out scenes "
            f"{seeds[0]}..{seeds[-1]} ({args.episodes} per task, the same scenes for every gate), "
            f"gate limits and zones from config/safety_monitor_nav.yaml (nav) and "
            f"config/safety_monitor_manip.yaml (manip), stream checks off (synchronous loop).\n\n"
            f"    {command}\n\n{text}\n\n{READING}\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
