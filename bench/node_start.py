"""Benchmark: how long the policy node takes from its process's spawn to "loaded ..." (the model
loaded, the node configured and active), what a robot waits for after `ros2 launch`.

Each run spawns `python -m vla_pruned_ros.ros.policy_node` with autostart, the shipped embedded
VLA (or `--model`), task nav, on its own ROS domain, and reads its log. `--trees` compares code
trees (a folder holding another checkout's `vla_pruned_ros/`, e.g. `git archive <commit> | tar
-x -C DIR`, put first on the path; `here` is this checkout), interleaved run by run so that both
see the same load.

    .venv/bin/python bench/node_start.py --repeats 3
    .venv/bin/python bench/node_start.py --trees here runs/probe/before --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def start_seconds(tree: str, model: str, domain: int) -> tuple[float, str]:
    """Spawn -> the node's 'loaded' line, and that line."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    if tree != "here":
        env["PYTHONPATH"] = os.path.abspath(tree)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "vla_pruned_ros.ros.policy_node", "--ros-args",
         "-p", "autostart:=true", "-p", "task:=nav", "-p", f"model:={model}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd="/tmp",
    )  # fmt: skip
    seen = ""
    try:
        for line in proc.stdout:
            if "] loaded " in line or "]: loaded " in line:
                seen = line.strip()
                break
        seconds = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if not seen:
        raise RuntimeError(f"the node in {tree} exited without loading its model")
    return seconds, seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs="+", default=["here"])
    p.add_argument("--model", default="embedded")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {t: [] for t in args.trees}
    for i in range(args.repeats):
        for tree in args.trees:
            seconds, line = start_seconds(tree, args.model, 90 + i % 10)
            times[tree].append(seconds)
            print(f"[node_start] {tree}: {seconds:.2f} s ({line[-90:]})", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"model {args.model}, {args.repeats} runs per tree, load average {load:.1f} at the end\n")
    print("| tree | spawn to loaded, s (each run) | median |")
    print("|---|---|---:|")
    for tree, ts in times.items():
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(f"| {tree} | {runs} | {statistics.median(ts):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
