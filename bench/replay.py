"""Benchmark: offline bag replay (`evaluate_bag`, what `vla-eval bag` runs) on one core: start-up
seconds and x real time in steady state (issue 23: "start in under 3 s; target >= 100x real time
for the embedded model on one core").

Each run is a fresh interpreter pinned to one CPU with one torch thread. Start-up is from the
process's spawn to the first batch's actions (interpreter, imports, typestore, opening the bag,
loading the model, the first batch's instruction features and its 32 frames); steady state is
the rest, and x real time is the bag's span of recorded steps over those seconds. `model s` is
the time inside the model calls, so `steady - model` is reading, decoding, pairing and the
command checks. `cache` is the instruction-feature cache (models/instruction_cache.py): `off`
loads the whole model as before it existed (MiniLM and its tokenizer); `cold` finds
no entry (loads them at the first batch and stores the features); `warm` finds every
instruction and never loads the text encoder. The cache lives in a temporary folder of this
run. Bags are the committed fixtures and a 10-minute bag built here from the nav fixture's own
frames, restamped (its instructions are the nav fixture's, so it finds them warm). `--models`
replays other models than the shipped one, e.g. a compressed artifact's folder (`vla-prune
... -o ART`), each on its own (one model per run); `transformers` says whether the run had
imported it by its end (MiniLM has not needed it since `models/minilm.py`).

    nice -n 10 .venv/bin/python bench/replay.py               # prints the table
    nice -n 10 .venv/bin/python bench/replay.py --minutes 10 --repeats 2 --batches 1,32
    nice -n 10 .venv/bin/python bench/replay.py --models embedded,/tmp/art   # and an artifact
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


def child(bag: Path, batch: int, cache: str, spawned: float, name: str = "embedded") -> None:
    """One measured replay; prints a JSON line. `cache`: 'off' or the cache folder."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    import torch

    torch.set_num_threads(1)
    from vla_pruned_ros.evaluation import bag_replay
    from vla_pruned_ros.models import batch as batching
    from vla_pruned_ros.models.instruction_cache import InstructionCache
    from vla_pruned_ros.models.registry import load_policy

    first: list[float] = []
    policies: list = []
    predict = batching.predict_batch

    def timed(*args):  # evaluate_bag imports predict_batch from the module at call time
        out = predict(*args)
        if not first:
            first.append(time.time())
        return out

    batching.predict_batch = timed
    store = None if cache == "off" else InstructionCache(Path(cache))

    def loader(name: str, task: str):
        policies.append(load_policy(name, task, instruction_cache=store))
        return policies[-1]

    result = bag_replay.evaluate_bag(bag, [name], progress=False, loader=loader,
                                     batch=batch)  # fmt: skip
    end = time.time()
    model = result["models"][name]
    print(json.dumps({
        "startup_s": first[0] - spawned, "steady_s": end - first[0],
        "bag_s": result["bag_seconds"], "steps": model["steps"],
        "model_s": model["model_seconds"], "error": result["error"],
        "cache": "off" if store is None else ("warm" if store.misses == 0 else "cold"),
        "transformers": "transformers" in sys.modules,
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


def run(bag: Path, batch: int, cache: str, name: str = "embedded") -> dict:
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(bag), str(batch), cache, repr(spawned), name],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batches", default="32", help="comma-separated batch sizes")
    parser.add_argument("--models", default="embedded",
                        help="comma-separated: 'embedded' or artifact folders")  # fmt: skip
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.child[2], float(args.child[3]),
              args.child[4])  # fmt: skip
        return 0
    with tempfile.TemporaryDirectory(prefix="replay_bench_") as tmp:
        t0 = time.perf_counter()
        long_bag = make_long_bag(Path(tmp) / "long", args.minutes)
        size = sum(f.stat().st_size for f in long_bag.iterdir()) / 1e6
        print(
            f"built {args.minutes:g}-minute bag ({size:.0f} MB) in {time.perf_counter() - t0:.1f} s"
        )
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        print("| bag | model | batch | cache | steps | bag s | start-up s | steady s | model s "
              "| x real time | transformers |")  # fmt: skip
        print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
        bags = [("nav fixture", FIXTURES / "nav"), ("manip fixture", FIXTURES / "manip"),
                (f"{args.minutes:g}-minute (nav frames)", long_bag)]  # fmt: skip
        for rep in range(args.repeats):
            for name, bag in bags:
                for model in args.models.split(","):
                    label = model if model == "embedded" else Path(model).name
                    for batch in (int(b) for b in args.batches.split(",")):
                        cache = str(Path(tmp) / f"instruction_cache_{rep}")  # cold once per rep
                        for mode in ("off", cache, cache):  # before / first with the cache / again
                            r = run(bag, batch, mode, model)
                            print(f"| {name} | {label} | {batch} | {r['cache']} | {r['steps']} | "
                                  f"{r['bag_s']:.1f} | {r['startup_s']:.2f} | "
                                  f"{r['steady_s']:.2f} | {r['model_s']:.2f} | "
                                  f"{r['bag_s'] / r['steady_s']:.0f} | {r['transformers']} |",
                                  flush=True)  # fmt: skip
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
