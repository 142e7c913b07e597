"""Record topics of a live graph into a rosbag2 bag, keeping each publisher's QoS. A ROS tool
(it subscribes with rclpy); the file is written by the one writer (`bags/writer.py`: MCAP with
chunk CRCs, or sqlite3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from vla_pruned_ros.bags.qos import to_bag_qos
from vla_pruned_ros.bags.types import rclpy_class, typestore
from vla_pruned_ros.bags.writer import CHUNK_BYTES, STORAGES, open_writer
from vla_pruned_ros.topic_names import absolute


class BagRecorder(Node):
    """Subscribes (serialized, no deserialisation) to the requested topics as soon as they
    appear in the graph, and writes every message with its receive time."""

    def __init__(
        self, bag: Path, topics: list[str], storage: str = "mcap",
        chunk_bytes: int = CHUNK_BYTES, **node_kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__("vla_bag_recorder", **node_kwargs)
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, not {storage!r}")
        if bag.exists():
            raise ValueError(f"{bag} already exists; choose a new output folder")
        self.writer = open_writer(bag, storage, chunk_bytes=chunk_bytes)
        self.pending = {absolute(t) for t in topics}
        self.counts: dict[str, int] = {}
        self._subs = []
        self.create_timer(0.2, self._discover)

    def _discover(self) -> None:
        for name, types in self.get_topic_names_and_types():
            if name not in self.pending:
                continue
            publishers = self.get_publishers_info_by_topic(name)
            if not publishers:
                continue
            offered = publishers[0].qos_profile
            # Subscribe best effort if any publisher is, so we match all of them.
            best_effort = any(
                p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers
            )
            qos = QoSProfile(
                depth=100,
                reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else offered.reliability,
                durability=offered.durability,
            )
            msgtype = types[0]
            conn = self.writer.add_connection(
                name, msgtype, typestore=typestore(), offered_qos_profiles=[to_bag_qos(offered)]
            )
            self.counts[name] = 0
            self._subs.append(
                self.create_subscription(
                    rclpy_class(msgtype), name, self._writer_for(conn, name), qos, raw=True
                )
            )
            self.pending.discard(name)
            self.get_logger().info(f"recording {name} [{msgtype}]")

    def _writer_for(self, conn, name: str):
        def write(raw: bytes) -> None:
            self.writer.write(conn, self.get_clock().now().nanoseconds, raw)
            self.counts[name] += 1

        return write

    def close(self) -> None:
        self.writer.close()
