"""Play a rosbag2 bag into the live graph, as `ros2 bag play` does: messages at their recorded
pace (scaled by `rate`), /clock from bag time for `use_sim_time` nodes, topic selection and
remapping, a start offset, and looping."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosbags.rosbag2 import Reader, ReaderError
from rosgraph_msgs.msg import Clock

from vla_pruned_ros.bags.qos import from_bag_qos
from vla_pruned_ros.bags.types import rclpy_class
from vla_pruned_ros.ros.conversions import sec_to_stamp


class BagError(ValueError):
    """A bag that cannot be played or read; the message names the problem."""


@dataclass
class PlayOptions:
    rate: float = 1.0
    topics: list[str] = field(default_factory=list)  # empty: all
    remap: dict[str, str] = field(default_factory=dict)
    start_offset_s: float = 0.0
    loop: bool = False
    clock: bool = True
    clock_hz: float = 100.0
    wait_for_subscribers_s: float = 0.0


def open_reader(bag: Path) -> Reader:
    if not bag.exists():
        raise BagError(f"bag {bag} does not exist")
    try:
        reader = Reader(bag)
        reader.open()
    except ReaderError as err:
        raise BagError(f"cannot read bag {bag}: {err}") from err
    return reader


class BagPlayer(Node):
    def __init__(self, bag: Path, options: PlayOptions) -> None:
        super().__init__("vla_bag_player")
        if options.rate <= 0:
            raise BagError(f"rate must be > 0, got {options.rate}")
        self.bag, self.options = bag, options
        self.reader = open_reader(bag)
        wanted = {t if t.startswith("/") else f"/{t}" for t in options.topics}
        known = {c.topic for c in self.reader.connections}
        missing = sorted(wanted - known)
        if missing:
            raise BagError(f"{bag} has no topic(s) {missing}; it has {sorted(known)}")
        self.connections = [c for c in self.reader.connections if not wanted or c.topic in wanted]
        self.bag_publishers = {}
        for conn in self.connections:
            qos = from_bag_qos(
                conn.ext.offered_qos_profiles[0] if conn.ext.offered_qos_profiles else None
            )
            topic = options.remap.get(conn.topic, conn.topic)
            self.bag_publishers[conn.id] = self.create_publisher(
                rclpy_class(conn.msgtype), topic, qos
            )
        self.clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self.published = 0

    def play(self, spin: Callable[[float], None] | None = None) -> int:
        """Publish the bag (once, or until interrupted when looping); returns messages sent.
        `spin(seconds)` lets the caller service its executor while waiting."""
        opts = self.options
        wait = spin or time.sleep
        if opts.wait_for_subscribers_s > 0:
            deadline = time.monotonic() + opts.wait_for_subscribers_s
            while time.monotonic() < deadline and not all(
                p.get_subscription_count() for p in self.bag_publishers.values()
            ):
                wait(0.05)
            wait(0.3)  # matching is seen by the publisher first; give the readers a moment
        start_ns = self.reader.start_time + int(opts.start_offset_s * 1e9)
        while True:
            self._play_once(start_ns, wait)
            if not opts.loop:
                for pub in self.bag_publishers.values():  # reliable samples reach readers
                    pub.wait_for_all_acked(Duration(seconds=2))
                return self.published

    def _play_once(self, start_ns: int, wait: Callable[[float], None]) -> None:
        opts = self.options
        wall0 = time.monotonic()
        next_clock = 0.0
        try:
            for conn, stamp_ns, raw in self.reader.messages(self.connections, start=start_ns):
                due = wall0 + (stamp_ns - start_ns) / 1e9 / opts.rate
                while True:
                    now = time.monotonic()
                    if opts.clock and now >= next_clock:
                        bag_now = start_ns + (now - wall0) * opts.rate * 1e9
                        self.clock_pub.publish(
                            Clock(clock=sec_to_stamp(min(bag_now, stamp_ns) / 1e9))
                        )
                        next_clock = now + 1.0 / opts.clock_hz
                    if now >= due:
                        break
                    wait(min(due - now, 1.0 / opts.clock_hz))
                self.bag_publishers[conn.id].publish(bytes(raw))
                self.published += 1
        except ReaderError as err:
            raise BagError(f"{self.bag} is damaged after {self.published} messages: {err}") from err
