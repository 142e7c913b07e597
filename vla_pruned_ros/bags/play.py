"""Play a rosbag2 bag into the live graph, as `ros2 bag play` does: messages at their recorded
pace (scaled by `rate`), /clock from bag time for `use_sim_time` nodes, topic selection and
remapping, a start offset, and looping.

A ROS tool (it publishes with rclpy); it reads the bag through the one reader
(`bags/reader.py`), so a truncated bag plays up to its last whole message and a corrupt chunk
stops the player with the chunk named, and a topic recorded with an older definition of its
type (a Contacts message from before `position`/`normal`) is republished as the installed type,
decoded with the bag's own stored definition (`bags/schemas.py`; one log line says so); where
the definitions agree the recorded bytes go out unchanged."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock

from vla_pruned_ros.bags.qos import from_bag_qos
from vla_pruned_ros.bags.reader import BagError, BagReader
from vla_pruned_ros.bags.types import rclpy_class
from vla_pruned_ros.ros.conversions import sec_to_stamp
from vla_pruned_ros.topic_names import absolute

__all__ = ["BagError", "BagPlayer", "PlayOptions"]


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


class BagPlayer(Node):
    def __init__(self, bag: Path, options: PlayOptions) -> None:
        super().__init__("vla_bag_player")
        if options.rate <= 0:
            raise BagError(f"rate must be > 0, got {options.rate}")
        self.bag, self.options = bag, options
        self.reader = BagReader(bag)
        wanted = {absolute(t) for t in options.topics}
        known = set(self.reader.topics)
        missing = sorted(wanted - known)
        if missing:
            raise BagError(f"{bag} has no topic(s) {missing}; it has {sorted(known)}")
        self.topics = [t for t in self.reader.topics.values() if not wanted or t.name in wanted]
        self.bag_publishers = {}
        for info in self.topics:
            qos = from_bag_qos(info.qos[0] if info.qos else None)
            topic = options.remap.get(info.name, info.name)
            self.bag_publishers[info.name] = self.create_publisher(
                rclpy_class(info.msgtype), topic, qos
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
        start_ns = self.reader.span_ns()[0] + int(opts.start_offset_s * 1e9)
        while True:
            self._play_once(start_ns, wait)
            if not opts.loop:
                for pub in self.bag_publishers.values():  # reliable samples reach readers
                    pub.wait_for_all_acked(Duration(seconds=2))
                return self.published

    def _play_once(self, start_ns: int, wait: Callable[[float], None]) -> None:
        opts = self.options
        next_clock = 0.0
        try:
            records = self.reader.records(self.bag_publishers, decode=False, start_ns=start_ns)
            first = next(records, None)  # the first chunk is read before the clock starts
            wall0 = time.monotonic()
            for record in itertools.chain([first] if first else [], records):
                due = wall0 + (record.log_ns - start_ns) / 1e9 / opts.rate
                while True:
                    now = time.monotonic()
                    if opts.clock and now >= next_clock:
                        bag_now = start_ns + (now - wall0) * opts.rate * 1e9
                        self.clock_pub.publish(
                            Clock(clock=sec_to_stamp(min(bag_now, record.log_ns) / 1e9))
                        )
                        next_clock = now + 1.0 / opts.clock_hz
                    if now >= due:
                        break
                    wait(min(due - now, 1.0 / opts.clock_hz))
                self.bag_publishers[record.topic].publish(bytes(record.raw))
                self.published += 1
        except BagError as err:
            raise BagError(f"{self.bag} is damaged after {self.published} messages: {err}") from err
        if self.reader.report.truncated:
            self.get_logger().warning(
                f"{self.bag}: {self.reader.report.truncated}; played {self.published} messages"
            )
