"""Record a live graph with `vla-bag record`, read it back, play it into the graph again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import rclpy
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosbags.interfaces import QosReliability
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from vla_pruned_ros_msgs.msg import VLAAction

from vla_pruned_ros.bags.types import typestore

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ["/cmd_vel_raw", "/camera/image_raw", "/vla/action"]


def _vla_bag(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.bag", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "run"
    source = subprocess.Popen([sys.executable, str(ROOT / "test/ros/fake_policy.py")])
    try:
        result = _vla_bag("record", "--output", str(bag), "--duration", "6", *TOPICS)
    finally:
        source.terminate()
        source.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    return bag


def _read(bag: Path) -> dict[str, list[bytes]]:
    with Reader(bag) as reader:
        out: dict[str, list[bytes]] = {c.topic: [] for c in reader.connections}
        for conn, _t, raw in reader.messages():
            out[conn.topic].append(bytes(raw))
        return out


def test_the_recorder_writes_chunk_crcs(recorded: Path) -> None:
    from vla_pruned_ros.bags.reader import BagReader

    reader = BagReader(recorded)
    assert sum(1 for _ in reader.records(decode=False)) > 30
    assert reader.report.crc_checked_chunks >= 1 and reader.report.crc_unchecked_chunks == 0


def test_recording_holds_every_topic_with_types_and_qos(recorded: Path) -> None:
    with Reader(recorded) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert set(conns) == set(TOPICS)
        assert conns["/vla/action"].msgtype == "vla_pruned_ros_msgs/msg/VLAAction"
        camera_qos = conns["/camera/image_raw"].ext.offered_qos_profiles[0]
        assert camera_qos.reliability == QosReliability.BEST_EFFORT
        assert all(c.msgcount >= 10 for c in conns.values()), {
            t: c.msgcount for t, c in conns.items()
        }
        _, _, raw = next(reader.messages([conns["/vla/action"]]))
    action = typestore().deserialize_cdr(raw, "vla_pruned_ros_msgs/msg/VLAAction")
    assert list(action.names) == ["linear_x", "angular_z"]


class Listener:
    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("bag_listener", context=self.context)
        self.raw: dict[str, list[bytes]] = {t: [] for t in TOPICS}
        self.clock: list[float] = []
        types = {"/cmd_vel_raw": Twist, "/camera/image_raw": Image, "/vla/action": VLAAction}
        for topic, cls in types.items():
            qos = qos_profile_sensor_data if cls is Image else 100
            self.node.create_subscription(cls, topic, self.raw[topic].append, qos, raw=True)
        self.node.create_subscription(
            Clock, "/clock", lambda m: self.clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 100
        )
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_while(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
        for _ in range(50):
            self.executor.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def test_playing_the_bag_gives_back_the_recorded_messages_and_a_clock(recorded: Path) -> None:
    listener = Listener()
    try:
        player = subprocess.Popen(
            [sys.executable, "-m", "vla_pruned_ros.cli.bag", "play", str(recorded),
             "--rate", "2.0", "--wait-for-subscribers", "10"],
        )  # fmt: skip
        listener.spin_while(player, 60)
        assert player.returncode == 0
    finally:
        listener.close()
    bag = _read(recorded)
    for topic in ("/cmd_vel_raw", "/vla/action"):  # reliable: every message, byte for byte
        assert Counter(listener.raw[topic]) == Counter(bag[topic]), topic
    images = listener.raw["/camera/image_raw"]
    assert len(images) >= 0.9 * len(bag["/camera/image_raw"])
    assert set(images) <= set(bag["/camera/image_raw"])
    with Reader(recorded) as reader:
        start, end = reader.start_time / 1e9, reader.end_time / 1e9
    assert listener.clock and listener.clock == sorted(listener.clock)
    assert start - 1e-6 <= listener.clock[0] and listener.clock[-1] <= end + 1e-6


def test_bad_bags_and_topics_are_clear_errors(recorded: Path, tmp_path: Path) -> None:
    missing = _vla_bag("play", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    wrong_topic = _vla_bag("play", str(recorded), "--topics", "/no_such_topic")
    assert wrong_topic.returncode == 2 and "/no_such_topic" in wrong_topic.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in recorded.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".mcap" else data)
    # a cut bag plays up to its last whole message and says where it broke
    result = _vla_bag("play", str(broken))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and str(broken) in result.stderr
    assert "truncated at byte" in result.stderr
    played = int(result.stdout.split("played ")[1].split()[0])
    assert 0 < played < sum(len(v) for v in _read(recorded).values())


def test_replay_keeps_a_deep_queue_on_reliable_topics(recorded: Path) -> None:
    """rosbag2 records depth 0; republished reliable topics (contacts, actions) get 100 messages
    of history so a lagging subscriber still sees each one, sensor streams stay shallow."""
    from rclpy.qos import ReliabilityPolicy

    from vla_pruned_ros.bags.qos import RELIABLE_REPLAY_DEPTH, from_bag_qos

    with Reader(recorded) as reader:
        conns = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    action, camera = from_bag_qos(conns["/vla/action"]), from_bag_qos(conns["/camera/image_raw"])
    assert action.reliability == ReliabilityPolicy.RELIABLE
    assert action.depth == RELIABLE_REPLAY_DEPTH
    assert camera.reliability == ReliabilityPolicy.BEST_EFFORT and camera.depth == 10
