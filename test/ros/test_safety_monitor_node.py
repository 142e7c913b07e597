"""The safety monitor as a real process on real DDS: it passes a live policy's commands, and stops
the robot within two control periods of a killed policy or a stalled camera."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from geometry_msgs.msg import Twist
from rclpy.node import Node
from vla_pruned_ros_msgs.msg import SafetyStatus

from vla_pruned_ros.ros import topics

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
RATE_HZ, TIMEOUT_S = 10.0, 0.3
PERIOD_S = 1.0 / RATE_HZ


class Watcher:
    """Receives the gated commands and the monitor's status in the test process."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("watcher", context=self.context)
        self.cmds: list[tuple[float, float]] = []  # (receipt time, linear.x)
        self.status: list[SafetyStatus] = []
        self.node.create_subscription(Twist, topics.CMD, self._cmd, 50)
        self.node.create_subscription(SafetyStatus, topics.SAFETY_STATUS, self.status.append, 50)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _cmd(self, msg: Twist) -> None:
        self.cmds.append((time.monotonic(), msg.linear.x))

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def graph(tmp_path: Path):
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, *args: str) -> subprocess.Popen:
        procs[name] = subprocess.Popen([sys.executable, *args], cwd=HERE)
        return procs[name]

    monitor_args = [
        "-m", "vla_pruned_ros.ros.safety_monitor_node", "--ros-args",
        "--params-file", str(ROOT / "config" / "safety_monitor.yaml"),
        "-p", f"report_dir:={tmp_path}",
        "-p", f"limits.control_rate_hz:={RATE_HZ}",
        "-p", f"limits.command_timeout_s:={TIMEOUT_S}",
        "-p", f"limits.camera_timeout_s:={TIMEOUT_S}",
    ]  # fmt: skip
    start("monitor", *monitor_args)
    watcher = Watcher()
    yield start, procs, watcher
    watcher.close()
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _first_stop_after(cmds: list[tuple[float, float]], t: float) -> float | None:
    return next((when for when, x in cmds if when > t and x == 0.0), None)


def test_killed_policy_is_stopped_within_two_control_periods(graph, tmp_path: Path) -> None:
    start, procs, watcher = graph
    policy = start("policy", "fake_policy.py")
    assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0), (
        "the monitor never passed a command from a live policy"
    )
    watcher.spin_until(lambda: False, 1.0)  # steady state
    policy.send_signal(signal.SIGKILL)
    policy.wait()
    t_kill = time.monotonic()
    assert watcher.spin_until(lambda: _first_stop_after(watcher.cmds, t_kill), 3.0)
    last_pass = max(when for when, x in watcher.cmds if x == 0.2)
    stop = _first_stop_after(watcher.cmds, last_pass)
    assert stop - last_pass <= TIMEOUT_S + 2 * PERIOD_S, f"stopped after {stop - last_pass:.3f} s"
    watcher.spin_until(lambda: False, 0.5)
    assert all(x == 0.0 for when, x in watcher.cmds if when > stop), "commands leaked after stop"

    procs["monitor"].send_signal(signal.SIGTERM)
    assert procs["monitor"].wait(timeout=10) == 0
    report = json.loads((tmp_path / "safety.json").read_text())
    counts = report["episodes"][-1]["counts"]
    assert counts["stale_command"] >= 1  # the kill (a loaded machine may add an earlier gap)
    assert report["episodes"][-1]["time_to_stop"] <= 2 * PERIOD_S


def test_stalled_camera_stops_the_robot(graph) -> None:
    start, _procs, watcher = graph
    policy = start("policy", "fake_policy.py")
    assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0)
    policy.send_signal(signal.SIGUSR1)  # stall the camera; commands keep coming

    def stopped_for_camera() -> bool:
        return any(
            s.gate == SafetyStatus.GATE_STOP and s.stop_reason == "stale_camera"
            for s in watcher.status
        )

    assert watcher.spin_until(stopped_for_camera, 10.0), "no stop for the stalled camera"
    t_stop = time.monotonic()
    watcher.spin_until(lambda: False, 1.0)
    after = [x for when, x in watcher.cmds if when > t_stop + 2 * PERIOD_S]
    assert after and all(x == 0.0 for x in after), "commands passed with a stale camera"
    last = watcher.status[-1]
    assert last.counts[list(last.categories).index("stale_camera")] >= 1
    assert last.unsafe
