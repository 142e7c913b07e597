"""Benchmark: offline bag replay (`evaluate_bag`, what `vla-eval bag` runs) on one core: start-up
seconds and x real time in steady state (issue 23: "start in under 3 s; target >= 100x real time
for the embedded model on one core").

Each run is a fresh interpreter pinned to one CPU with one torch thread. Start-up is from the
process's spawn to the model loaded and ready for the first batch (interpreter, imports,
typestore, opening the bag, loading the model); steady state is the rest, and x real time is the
bag's span of recorded steps over those seconds. `model s` is the time inside the model calls,
so `steady - model` is reading, decoding, pairing and the command checks. Runs are frame by frame
(`--batch 1`, as before batching) and batched (32), interleaved; bags are the committed fixtures
and a 10-minute bag built here in a temporary folder from the fixture's own frames, restamped.

    nice -n 10 .venv/bin/python bench/replay.py               # prints the table
    nice -n 10 .venv/bin/python bench/replay.py --minutes 10 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "test" / "fixtures" / "bags"


def child(bag: Path, batch: int, spawned: float) -> None:
    """One measured replay; prints a JSON line."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    import torch

    torch.set_num_threads(1)
    from vla_pruned_ros.evaluation.bag_replay import evaluate_bag
    from vla_pruned_ros.models.registry import load_policy

    ready: list[float] = []

    def loader(name: str, task: str):
        policy = load_policy(name, task)
        ready.append(time.time())
        return policy

    result = evaluate_bag(bag, ["embedded"], progress=False, loader=loader, batch=batch)
    end = time.time()
    model = result["models"]["embedded"]
    print(json.dumps({
        "startup_s": ready[0] - spawned, "steady_s": end - ready[0],
        "bag_s": result["bag_seconds"], "steps": model["steps"],
        "model_s": model["model_seconds"], "error": result["error"],
    }))  # fmt: skip


def make_long_bag(out: Path, minutes: float) -> Path:
    """`minutes` of recording from the nav fixture's frames and actions, restamped end to end
    (episodes renumbered), written by the one writer."""
    from vla_pruned_ros.bags.reader import BagReader
    from vla_pruned_ros.bags.types import typestore
    from vla_pruned_ros.bags.writer import open_writer

    store = typestore()
    source = BagReader(FIXTURES / "nav")
    wanted = ["/camera/image_raw", "/vla/action", "/instruction", "/episode"]
    records = list(source.records(wanted))
    span = max(r.log_ns for r in records) - min(r.log_ns for r in records) + 100_000_000
    writer = open_writer(out)
    conns = {t: writer.add_connection(t, source.topics[t].msgtype, typestore=store) for t in wanted}
    rounds = int(minutes * 60e9 // span) + 1
    for k in range(rounds):
        shift = k * span
        for r in records:
            msg = r.message
            if hasattr(msg, "header"):
                ns = r.stamp_ns + shift
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            elif r.topic == "/episode" and msg.data.startswith("start"):
                msg.data = f"start round{k}-{msg.data.split(maxsplit=1)[-1]}"
            writer.write(conns[r.topic], r.log_ns + shift, store.serialize_cdr(msg, r.msgtype))
            if hasattr(msg, "header"):
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(r.stamp_ns, 1_000_000_000)
            elif r.topic == "/episode" and msg.data.startswith("start round"):
                msg.data = "start " + msg.data.split("-", 1)[1]
    writer.close()
    return out


def run(bag: Path, batch: int) -> dict:
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(bag), str(batch), repr(spawned)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), float(args.child[2]))
        return 0
    with tempfile.TemporaryDirectory(prefix="replay_bench_") as tmp:
        t0 = time.perf_counter()
        long_bag = make_long_bag(Path(tmp) / "long", args.minutes)
        size = sum(f.stat().st_size for f in long_bag.iterdir()) / 1e6
        print(
            f"built {args.minutes:g}-minute bag ({size:.0f} MB) in {time.perf_counter() - t0:.1f} s"
        )
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        print("| bag | batch | steps | bag s | start-up s | steady s | model s | x real time |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        bags = [("nav fixture", FIXTURES / "nav"), ("manip fixture", FIXTURES / "manip"),
                (f"{args.minutes:g}-minute (nav frames)", long_bag)]  # fmt: skip
        for _ in range(args.repeats):
            for name, bag in bags:
                for batch in (1, 32):
                    r = run(bag, batch)
                    print(f"| {name} | {batch} | {r['steps']} | {r['bag_s']:.1f} | "
                          f"{r['startup_s']:.2f} | {r['steady_s']:.2f} | {r['model_s']:.2f} | "
                          f"{r['bag_s'] / r['steady_s']:.0f} |", flush=True)  # fmt: skip
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
