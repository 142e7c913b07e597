"""Serial vs Ray on this machine for a 4-cell sweep, Ray's per-task overhead, and the cluster
estimate for the full closed-loop grid on a 7B VLA.

    nice -n 10 .venv/bin/python bench/scale.py --episodes 8 --shard-episodes 2
    nice -n 10 .venv/bin/python bench/scale.py --estimate-only --step-s 0.2

The 4 cells are dense and magnitude 2:4 (the sweep's own artifacts, built once) on nav and manip,
run through `closed_loop.run_cells`: the sweep's run loop. Same seeds, so the Ray table must equal
the serial one (checked). Ray runs twice: cold (fresh workers import torch and load the model) and
warm (workers kept). The estimate reads the committed full-grid results (results/closed_loop.json:
episodes and their steps per cell) and prices every step at `--step-s` seconds of a GPU.
Offline bag replay (x real time, start-up) is issue 23's other figure and has its own
benchmark, `bench/replay.py` -> `bench/RESULTS_replay.md`, summarised in RESULTS_scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _noop(i: int) -> int:
    return i


def _cells(episodes: int) -> dict:
    from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, shared_model
    from vla_pruned_ros.evaluation.sweep import SweepConfig, build_variants

    cfg = SweepConfig(methods=["magnitude"], patterns=["2:4"], ranks=[],
                      artifacts_dir=str(ROOT / "runs/bench_scale/artifacts"))  # fmt: skip
    variants = build_variants(cfg, progress=False)
    return {f"{v.name} {t}": [EvalJob(t, shared_model(v.artifact), s)
                              for s in heldout_seeds(0, episodes)]
            for v in variants for t in ("nav", "manip")}  # fmt: skip


def _table(done: dict) -> dict:
    keep = ("seed", "success", "unsafe", "collisions", "steps", "distance_to_goal")
    return {name: [{k: r.get(k) for k in keep} for r in c.records] for name, c in done.items()}


def measure(episodes: int, shard: int, tasks_for_overhead: int, rounds: int) -> dict:
    import ray

    from vla_pruned_ros.evaluation.closed_loop import run_cells
    from vla_pruned_ros.evaluation.parallel import Parallel, Work, run

    cells = _cells(episodes)
    items = sum(-(-len(j) // shard) for j in cells.values())
    out = {"cells": len(cells), "episodes": episodes * len(cells), "items": items,
           "shard": shard, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}  # fmt: skip
    serial_opts = Parallel(shard_episodes=shard, progress=False)
    options = Parallel("local", shard_episodes=shard, progress=False)

    def timed(opts: Parallel) -> tuple[float, dict]:
        start = time.perf_counter()
        done = run_cells(cells, opts)
        return time.perf_counter() - start, _table(done)

    out["serial_cold_s"], serial = timed(serial_opts)  # this process loads the models
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out["ray_init_s"] = time.perf_counter() - start
    out["ray_cold_s"], table = timed(options)  # fresh workers import torch, load the models
    out["ray_cold_equal"] = table == serial
    warm: dict[str, list[float]] = {"serial": [], "ray": []}
    for _ in range(rounds):  # interleaved, so both see the same load
        for name, opts in (("serial", serial_opts), ("ray", options)):
            seconds, table = timed(opts)
            warm[name].append(seconds)
            out["ray_warm_equal"] = out.get("ray_warm_equal", True) and table == serial
    out["serial_s"] = min(warm["serial"])
    out["ray_warm_s"] = min(warm["ray"])
    work = [Work("noop", _noop, (i,)) for i in range(tasks_for_overhead)]
    run(work, options)  # warm the no-op path
    start = time.perf_counter()
    run(work, options)
    out["noop_task_ms"] = (time.perf_counter() - start) / tasks_for_overhead * 1e3
    # what each item cost beyond its episodes: Ray's warm CPU-seconds over the serial ones
    cpus = ray.cluster_resources().get("CPU", 1.0)
    out["overhead_per_item_s"] = (out["ray_warm_s"] * cpus - out["serial_s"]) / items
    out["load_after"] = os.getloadavg()[0]
    ray.shutdown()
    return out


def estimate(step_s: float, gpus: list[int], load_s: float) -> dict:
    """GPU-hours for the committed grid at `step_s` per step, one GPU per task; and the
    makespan when each task is a whole cell (shard_episodes >= a cell's episodes), so a worker
    loads the model `load_s` once per cell instead of once per shard."""
    result = json.loads((ROOT / "results/closed_loop.json").read_text())
    episodes = steps = cells = 0
    for variant in result["variants"]:
        for task in variant["tasks"].values():
            cells += 1
            rows = task["episodes"]
            episodes += len(rows)
            steps += sum(r["steps"] for r in rows)
    heldout = result["config"].get("heldout_phrasing", 0) * cells  # not kept per episode
    mean_steps = steps / episodes
    total_steps = steps + heldout * mean_steps
    gpu_h = total_steps * step_s / 3600
    cell_h = (total_steps / cells * step_s + load_s) / 3600
    return {"cells": cells, "episodes": episodes + heldout, "mean_steps": mean_steps,
            "total_steps": total_steps, "gpu_hours": gpu_h, "cell_hours": cell_h,
            "hours": {n: (gpu_h / n, -(-cells // n) * cell_h) for n in gpus}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8, help="per cell")
    parser.add_argument("--shard-episodes", type=int, default=2)
    parser.add_argument("--overhead-tasks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved warm runs (best kept)")
    parser.add_argument("--step-s", type=float, default=0.2, help="7B VLA seconds per step")
    parser.add_argument("--gpus", default="8,16,32,64,98")
    parser.add_argument("--load-s", type=float, default=60.0,
                        help="seconds a worker takes to load one 7B variant")  # fmt: skip
    parser.add_argument("--estimate-only", action="store_true")
    args = parser.parse_args()
    if not args.estimate_only:
        m = measure(args.episodes, args.shard_episodes, args.overhead_tasks, args.rounds)
        print(
            f"| 4-cell sweep ({m['episodes']} episodes, {m['items']} items of "
            f"{m['shard']}) | seconds | speed-up | table equal |"
        )
        print("|---|---:|---:|---|")
        print(f"| serial, in process, cold (loads the models) | {m['serial_cold_s']:.1f} | - | - |")
        print(f"| serial, in process, warm | {m['serial_s']:.1f} | 1.00x | - |")
        for key, label in (("ray_cold", "Ray cold (workers start)"), ("ray_warm", "Ray warm")):
            print(
                f"| {label}, {m['cpus']} CPUs | {m[key + '_s']:.1f} | "
                f"{m['serial_s'] / m[key + '_s']:.2f}x | {m[key + '_equal']} |"
            )
        print(
            f"\nray.init {m['ray_init_s']:.1f} s; empty task round trip "
            f"{m['noop_task_ms']:.1f} ms; overhead per item (warm CPU-s beyond serial) "
            f"{m['overhead_per_item_s']:.2f} s; load {m['load_before']:.1f} -> "
            f"{m['load_after']:.1f}"
        )
    e = estimate(args.step_s, [int(g) for g in args.gpus.split(",")], args.load_s)
    print(
        f"\nfull grid: {e['cells']} cells, {e['episodes']:.0f} episodes, "
        f"{e['mean_steps']:.1f} steps per episode, {e['total_steps'] / 1e6:.2f} M steps; at "
        f"{args.step_s} s per step {e['gpu_hours']:.0f} GPU-hours"
    )
    print(f"one cell: {e['cell_hours'] * 60:.0f} min including a {args.load_s:.0f} s model load")
    print("| GPUs (1 per task) | hours, perfectly balanced | hours, whole-cell tasks |")
    print("|---:|---:|---:|")
    for n, (ideal, cells) in e["hours"].items():
        print(f"| {n} | {ideal:.1f} | {cells:.1f} |")


if __name__ == "__main__":
    main()
