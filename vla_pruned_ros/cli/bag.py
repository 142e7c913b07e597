"""`vla-bag`: record a live graph to a bag, play a bag into the graph, or describe a bag.

vla-bag record --output BAG camera/image_raw instruction cmd_vel [--duration 30]
vla-bag play BAG [--rate 2] [--topics ...] [--remap /a:=/b] [--start-offset 5] [--loop]
vla-bag info BAG
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vla_pruned_ros.bags.reader import BagError, BagReader


def _record(args: argparse.Namespace) -> int:
    from rclpy.parameter import Parameter

    from vla_pruned_ros.bags.record import BagRecorder
    from vla_pruned_ros.ros.runner import run_node

    end = time.monotonic() + args.duration if args.duration else None

    def finish(node: BagRecorder) -> None:
        node.close()
        print(f"wrote {args.output}: " + ", ".join(f"{t} {n}" for t, n in node.counts.items()))

    return run_node(
        lambda: BagRecorder(
            args.output,
            args.topics,
            args.storage,
            parameter_overrides=(
                [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if args.use_sim_time else []
            ),
        ),
        argv=[],
        on_shutdown=finish,
        stop_when=lambda _node: end is not None and time.monotonic() >= end,
    )


def _play(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from vla_pruned_ros.bags.play import BagPlayer, PlayOptions

    remap = dict(pair.split(":=", 1) for pair in args.remap)
    options = PlayOptions(
        rate=args.rate,
        topics=args.topics,
        remap=remap,
        start_offset_s=args.start_offset,
        loop=args.loop,
        clock=not args.no_clock,
        wait_for_subscribers_s=args.wait_for_subscribers,
    )
    rclpy.init(args=[])
    player = None
    try:
        player = BagPlayer(args.bag, options)
        executor = SingleThreadedExecutor()
        executor.add_node(player)
        sent = player.play(spin=lambda s: executor.spin_once(timeout_sec=s))
        print(f"played {sent} messages from {args.bag}")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if player is not None:
            player.destroy_node()
        rclpy.shutdown()


def _info(args: argparse.Namespace) -> int:
    """Duration, message count and topics from the bag's summary, through the one reader
    (no rclpy: `info` works where ROS is not set up)."""
    with BagReader(args.bag) as reader:
        start, end = reader.span_ns()
        topics = list(reader.topics.values())
        print(f"bag:       {args.bag}")
        print(f"duration:  {(end - start) / 1e9:.3f} s   messages: "
              f"{sum(max(0, t.count) for t in topics)}")  # fmt: skip
        for t in topics:
            print(f"  {t.name:30s} {t.msgtype:40s} {t.count}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla-bag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record topics of the live graph")
    rec.add_argument("topics", nargs="+")
    rec.add_argument("--output", "-o", type=Path, required=True)
    rec.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    rec.add_argument("--duration", type=float, help="stop after this many seconds")
    rec.add_argument(
        "--use-sim-time",
        action="store_true",
        help="stamp messages with /clock time (recording a simulation)",
    )
    play = sub.add_parser("play", help="publish a bag into the live graph")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0)
    play.add_argument("--topics", nargs="*", default=[])
    play.add_argument("--remap", nargs="*", default=[], metavar="FROM:=TO")
    play.add_argument("--start-offset", type=float, default=0.0)
    play.add_argument("--loop", action="store_true")
    play.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    play.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS")
    info = sub.add_parser("info", help="describe a bag")
    info.add_argument("bag", type=Path)
    args = parser.parse_args(argv)
    try:
        if any(":=" not in pair for pair in getattr(args, "remap", [])):
            raise BagError("--remap takes FROM:=TO pairs")
        return {"record": _record, "play": _play, "info": _info}[args.command](args)
    except BagError as err:
        print(f"vla-bag: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
