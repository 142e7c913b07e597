"""Old parameter names still work once (ros/params.py): a real node process given an old name is
wired to the topic it names and logs one deprecation warning naming old and new; given both, the
new name wins and the warning says the old value was ignored. Real processes over real DDS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vla_pruned_ros.ros.conversions import sec_to_stamp
from vla_pruned_ros.ros.image_io import rgb_to_image
from vla_pruned_ros.ros.params import RENAMED
from vla_pruned_ros.ros.policy_node import INSTRUCTION_QOS

HERE = Path(__file__).parent


class Probe:
    """The test process: publishes on some topics and records Twists arriving on others."""

    def __init__(self, listen: list[str]) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("renamed_probe", context=self.context)
        self.got: dict[str, list[float]] = {t: [] for t in listen}
        for topic in listen:
            self.node.create_subscription(
                Twist, topic, lambda m, t=topic: self.got[t].append(m.linear.x), 10
            )
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def run_until(self, done, seconds: float, each=None) -> bool:
        """Spin (calling `each` every 50 ms) until `done()` or `seconds` pass."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if each:
                each()
            deadline = time.monotonic() + 0.05
            while time.monotonic() < deadline:
                self.executor.spin_once(timeout_sec=0.01)
            if done():
                return True
        return False

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _start(module: str, log: Path, *params: str, env: dict | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", module, "--ros-args", *(a for p in params for a in ("-p", p))]
    with log.open("w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=HERE, env=env)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _warnings(log: Path, old: str) -> list[str]:
    return [
        line for line in log.read_text().splitlines() if f"parameter '{old}' is deprecated" in line
    ]


def test_the_monitor_takes_its_old_command_topic_names_once(tmp_path: Path) -> None:
    assert RENAMED["safety_monitor_node"] == {
        "cmd_in_topic": "cmd_raw_topic",
        "cmd_out_topic": "cmd_topic",
    }
    log = tmp_path / "monitor.log"
    monitor = _start(
        "vla_pruned_ros.ros.safety_monitor_node", log,
        "cmd_in_topic:=legacy/cmd_raw",  # old name alone: taken
        "cmd_out_topic:=legacy/ignored", "cmd_topic:=legacy/cmd",  # both: the new one wins
        f"report_dir:={tmp_path}", "limits.camera_timeout_s:=0.0", "limits.policy_timeout_s:=0.0",
    )  # fmt: skip
    probe = Probe(["legacy/cmd", "legacy/ignored", "cmd_vel"])
    pub = probe.node.create_publisher(Twist, "legacy/cmd_raw", 10)
    move = Twist()
    move.linear.x = 0.2
    try:
        passed = lambda: 0.2 in probe.got["legacy/cmd"]  # noqa: E731
        assert probe.run_until(passed, 30.0, each=lambda: pub.publish(move)), (
            f"no command forwarded from legacy/cmd_raw to legacy/cmd; log:\n{log.read_text()}"
        )
        probe.run_until(lambda: False, 0.5, each=lambda: pub.publish(move))
        assert probe.got["legacy/ignored"] == [], "the old cmd_out_topic won over cmd_topic"
        assert 0.2 not in probe.got["cmd_vel"], "the monitor forwarded on the default topic"
    finally:
        _stop(monitor)
        probe.close()
    (taken,) = _warnings(log, "cmd_in_topic")
    assert "renamed 'cmd_raw_topic'" in taken and "legacy/cmd_raw" in taken
    (ignored,) = _warnings(log, "cmd_out_topic")
    assert "renamed 'cmd_topic'" in ignored and "ignored" in ignored


def test_the_policy_takes_its_old_camera_and_command_topic_names_once(tmp_path: Path) -> None:
    assert RENAMED["policy_node"] == {"image_topic": "camera_topic", "cmd_topic": "cmd_raw_topic"}
    log = tmp_path / "policy.log"
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    policy = _start(
        "vla_pruned_ros.ros.policy_node", log,
        f"artifact:={tmp_path}", "adapter:=user_adapter:ConstantPolicy",
        "image_topic:=legacy/camera",  # old name alone: taken
        "cmd_topic:=legacy/cmd_raw",  # the policy's old output name alone: taken
        env=env,
    )  # fmt: skip
    probe = Probe(["legacy/cmd_raw", "cmd_vel_raw", "cmd_vel"])
    camera = probe.node.create_publisher(Image, "legacy/camera", qos_profile_sensor_data)
    instruction = probe.node.create_publisher(String, "instruction", INSTRUCTION_QOS)
    instruction.publish(String(data="go to the red marker"))
    rgb = np.full((24, 32, 3), 128, np.uint8)

    def frame() -> None:
        now = probe.node.get_clock().now().nanoseconds * 1e-9
        camera.publish(rgb_to_image(rgb, sec_to_stamp(now)))

    try:
        acted = lambda: 0.25 in probe.got["legacy/cmd_raw"]  # noqa: E731
        assert probe.run_until(acted, 60.0, each=frame), (
            f"no command on legacy/cmd_raw from frames on legacy/camera; log:\n{log.read_text()}"
        )
        assert probe.got["cmd_vel_raw"] == [] and probe.got["cmd_vel"] == [], (
            "the policy published on a default topic as well"
        )
    finally:
        _stop(policy)
        probe.close()
    (camera_warning,) = _warnings(log, "image_topic")
    assert "renamed 'camera_topic'" in camera_warning and "legacy/camera" in camera_warning
    (cmd_warning,) = _warnings(log, "cmd_topic")
    assert "renamed 'cmd_raw_topic'" in cmd_warning and "legacy/cmd_raw" in cmd_warning
