"""`bag_player`: `vla-bag play` as a ROS executable configured by parameters, so a replay graph
(bag + policy + monitor on sim time) is one bringup/params file, like the launch file that uses
the real `ros2 bag play --clock` on a full install. Exits when the bag has been played."""

from __future__ import annotations

import sys
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from vla_pruned_ros.bags.play import BagPlayer, PlayOptions
from vla_pruned_ros.bags.reader import BagError

PARAMETERS = {
    "bag": "",
    "rate": 1.0,
    "topics": [""],  # empty: all topics
    "remap": [""],  # "FROM:=TO" pairs
    "start_offset_s": 0.0,
    "loop": False,
    "clock": True,
    "wait_for_subscribers_s": 15.0,
}


class BagPlayerParameters(Node):
    """Declares the player's parameters (read before the player starts, which needs them)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("vla_bag_player", **kwargs)
        self.values = {k: self.declare_parameter(k, v).value for k, v in PARAMETERS.items()}


def read_options(argv: list[str]) -> tuple[Path, PlayOptions]:
    rclpy.init(args=argv)
    try:
        node = BagPlayerParameters()
        values = node.values
        node.destroy_node()
    finally:
        rclpy.shutdown()
    if not values["bag"]:
        raise BagError("parameter 'bag' is empty: name the bag folder to play")
    remap = dict(p.split(":=", 1) for p in values["remap"] if p)
    options = PlayOptions(
        rate=float(values["rate"]),
        topics=[t for t in values["topics"] if t],
        remap=remap,
        start_offset_s=float(values["start_offset_s"]),
        loop=bool(values["loop"]),
        clock=bool(values["clock"]),
        wait_for_subscribers_s=float(values["wait_for_subscribers_s"]),
    )
    return Path(values["bag"]).expanduser(), options


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    try:
        bag, options = read_options(argv)
    except BagError as err:
        print(f"bag_player: {err}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    player = None
    try:
        player = BagPlayer(bag, options)
        executor = SingleThreadedExecutor()
        executor.add_node(player)
        sent = player.play(spin=lambda s: executor.spin_once(timeout_sec=s))
        player.get_logger().info(f"played {sent} messages from {bag}")
        return 0
    except BagError as err:
        print(f"bag_player: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        if player is not None:
            player.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
