"""Regenerate the fixture bags under test/fixtures/bags/ (like Nav2's collision-monitor test bag).

For each task it runs the real graph (simulation node, policy node with the embedded VLA, safety
monitor) for a few held-out episodes, and records everything a replay needs with `vla-bag`'s
recorder (its file written by `bags/writer.py`, with chunk CRCs): camera frames, instructions,
episode markers, the policy's actions and commands, the gated commands, contacts, proximity,
odometry/joints, safety events and /clock. Contacts carry their world point and normal
(Contacts.msg `position`/`normal`); `legacy_contacts_v1/` is a manipulation bag recorded before
those fields existed, kept (never regenerated) so the reader's and player's translation of an
older definition stays tested (bags/schemas.py).

    .venv/bin/python scripts/make_fixture_bags.py [--episodes 2] [--out test/fixtures/bags]
        [--tasks nav manip] [--summary]

After recording (or with `--summary`, for bags already there) it prints each episode's mean
commanded (/cmd_vel_raw) and gated (/cmd_vel) planar speed: a gate that mistakes where the
robot is shows as a gated speed far below the commanded one.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from vla_pruned_ros import topic_names as topics

TOPICS = [
    topics.CAMERA, topics.INSTRUCTION, topics.EPISODE, topics.ACTION, topics.CMD_RAW,
    topics.CMD, topics.CONTACTS, topics.SCAN, topics.ODOM, topics.JOINT_STATES,
    topics.SAFETY_EVENTS, topics.CLOCK,
]  # fmt: skip
LIMIT_BYTES = 10 * 1024 * 1024
# Fixture bags are written in 256 KiB chunks (rosbag2's 1 MiB elsewhere), so that a short bag
# (two manipulation episodes that succeed in ~80 steps are under 1 MB) still holds several
# chunks: test/bags/test_offline_replay.py cuts the last one and reads the whole ones before it.
FIXTURE_CHUNK_BYTES = 256 * 1024


def record_task(task: str, episodes: int, bag: Path, first_seed: int) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_pruned_ros.bags.record import BagRecorder
    from vla_pruned_ros.cli.ros_up import load_bringup, run_graph
    from vla_pruned_ros.paths import package_file

    specs, _ = load_bringup(package_file(f"config/bringup_{task}.yaml"))
    reports = Path(tempfile.mkdtemp(prefix="fixture_reports_"))
    for spec in specs:
        spec.overrides["report_dir"] = str(reports)
        if spec.executable == "sim_node":
            spec.overrides.update(episodes=episodes, first_seed=first_seed, settle_s=3.0)
    context = rclpy.Context()
    rclpy.init(context=context)
    # Log times on the simulation's clock (like `ros2 bag record --use-sim-time`), so a replay's
    # /clock and the recorded header stamps agree.
    sim_time = Parameter("use_sim_time", Parameter.Type.BOOL, True)
    recorder = BagRecorder(bag, TOPICS, chunk_bytes=FIXTURE_CHUNK_BYTES, context=context,
                           parameter_overrides=[sim_time])  # fmt: skip
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        code = run_graph(specs)
    finally:
        stop.set()
        thread.join()
        recorder.close()
        recorder.destroy_node()
        rclpy.shutdown(context=context)
        results = reports / f"sim_{task}.json"
        for ep in json.loads(results.read_text())["episodes"] if results.exists() else []:
            print(f"{task}-{ep['seed']}: success={ep['success']} unsafe={ep['unsafe']} "
                  f"steps={ep['steps']}")  # fmt: skip
        shutil.rmtree(reports, ignore_errors=True)
    print(f"{task}: graph exit code {code}; recorded {recorder.counts}", file=sys.stderr)
    missing = [t for t in TOPICS if topics.absolute(t) not in recorder.counts]
    if code != 0 or missing:
        raise SystemExit(f"{task}: recording incomplete (exit {code}, missing topics {missing})")


def speed_summary(bag: Path) -> list[str]:
    """One line per recorded episode: its frames and the mean planar speed commanded by the
    policy and passed by the gate (m/s)."""
    from vla_pruned_ros.bags.reader import BagReader

    wanted = [topics.EPISODE, topics.CAMERA, topics.CMD_RAW, topics.CMD]
    episodes: list[dict] = []
    current = None
    with BagReader(bag) as reader:
        decode = [topics.EPISODE, topics.CMD_RAW, topics.CMD]
        for rec in reader.records(wanted, decode=decode):
            if rec.topic == topics.absolute(topics.EPISODE):
                words = rec.message.data.split()
                current = {"id": words[-1], "frames": 0, "raw": [], "cmd": []}
                current = current if words[0] == "start" else None
                episodes += [current] if current else []
            elif current is None:
                continue
            elif rec.topic == topics.absolute(topics.CAMERA):
                current["frames"] += 1
            else:
                key = "raw" if rec.topic == topics.absolute(topics.CMD_RAW) else "cmd"
                current[key].append(math.hypot(rec.message.linear.x, rec.message.linear.y))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    every = {
        "id": "all episodes",
        **{k: [v for e in episodes for v in e[k]] for k in ("raw", "cmd")},
        "frames": sum(e["frames"] for e in episodes),
    }
    return [
        f"{e['id']}: {e['frames']} frames, commanded {mean(e['raw']):.3f} m/s "
        f"({len(e['raw'])}), gated {mean(e['cmd']):.3f} m/s ({len(e['cmd'])})"
        for e in [*episodes, every]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=2)
    # Held-out scenes where the dense policy was unsafe in `vla-eval sweep` (dense cells), so the
    # bags hold real violations for the monitor to count on replay.
    parser.add_argument("--nav-seed", type=int, default=1_000_065)
    parser.add_argument("--manip-seed", type=int, default=1_000_046)
    parser.add_argument("--out", type=Path, default=Path("test/fixtures/bags"))
    parser.add_argument("--tasks", nargs="+", default=["nav", "manip"], help="re-record only these")
    parser.add_argument("--summary", action="store_true", help="only summarise the bags there")
    args = parser.parse_args()
    if args.summary:
        for task in args.tasks:
            print("\n".join(speed_summary(args.out / task)))
        return 0
    from vla_pruned_ros.ros.dds import use_localhost_profile

    use_localhost_profile()
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        bag = args.out / task
        if bag.exists():
            shutil.rmtree(bag)
        record_task(task, args.episodes, bag, getattr(args, f"{task}_seed"))
        print("\n".join(speed_summary(bag)))
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"fixture bags: {total / 1e6:.2f} MB in {args.out}")
    if total > LIMIT_BYTES:
        print(f"too large (> {LIMIT_BYTES / 1e6:.1f} MB): use fewer episodes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
