"""Contact geometry over real DDS: a Contacts message built as the simulation node builds it
(`conversions.contacts_to_msg` from simulator contact records, with world point and normal)
reaches the real safety monitor process (the navigation safety YAML, direction-aware), which
limits the speed into the touched surface and passes motion away from it and along it; for each
pose and command it sends exactly what the in-process gate (`evaluation.gated_loop`'s
configuration, the same contact through `conversions.contacts_from_msg`) lets through."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from geometry_msgs.msg import Twist, Vector3
from monitor_process import camera_less_monitor
from nav_msgs.msg import Odometry
from vla_pruned_ros_msgs.msg import Contacts

from vla_pruned_ros.evaluation.gated_loop import gate_config
from vla_pruned_ros.monitor import SafetyMonitor
from vla_pruned_ros.monitor.limits import TASK_SAFETY_CONFIG
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import contacts_from_msg, contacts_to_msg, sec_to_stamp
from vla_pruned_ros.sim.base import ContactRecord

ROOT = Path(__file__).resolve().parents[2]
# The wall east of the robot, reported wall first as MuJoCo may: its normal points from the wall
# into the base, so the monitor must reverse it with the sides.
WALL = ContactRecord("wall_e", "base", 5.0, (0.15, 0.0, 0.05), (-1.0, 0.0, 0.0))


@pytest.fixture
def monitor(tmp_path: Path):
    with camera_less_monitor(ROOT / TASK_SAFETY_CONFIG["nav"], tmp_path) as watcher:
        yield watcher


def _in_process_gate(msg: Contacts) -> SafetyMonitor:
    """The in-process gate of the navigation task, given the same message's contacts."""
    limits, zones = gate_config("nav", "direction")
    gate = SafetyMonitor(limits, now=0.0, zones=zones)
    gate.on_pose(0.0, 0.0, 0.0)
    contacts, points, normals = contacts_from_msg(msg, ("base",))
    gate.on_contacts(contacts, 0.0, points=points, normals=normals)
    gate.on_contacts([], 0.1)
    return gate


def _gate_passes(gate: SafetyMonitor, pose: tuple[float, float, float], v: float) -> float:
    gate.on_pose(*pose)
    gate.on_command([v, 0.0, 0.0], [0.0, 0.0, 0.0], 1.0)
    if gate.decide(1.0).stop:
        return 0.0
    return gate.clamp([v, 0.0, 0.0], [0.0, 0.0, 0.0])[0][0]


def test_monitor_limits_speed_into_a_contact_normal_as_the_in_process_gate_does(monitor) -> None:
    watcher, node = monitor, monitor.node
    cmd_pub = node.create_publisher(Twist, topics.CMD_RAW, 10)
    contacts_pub = node.create_publisher(Contacts, topics.CONTACTS, topics.EVIDENCE_DEPTH)
    odom_pub = node.create_publisher(Odometry, topics.ODOM, 10)
    state = {"v": 0.3, "pose": (0.0, 0.0, 0.0), "next": 0.0}

    def drive() -> bool:
        """Publish the current pose and command at ~10 Hz while spinning."""
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + 0.1
            x, y, yaw = state["pose"]
            odom = Odometry()
            odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
            odom.pose.pose.orientation.z = math.sin(yaw / 2)
            odom.pose.pose.orientation.w = math.cos(yaw / 2)
            odom_pub.publish(odom)
            cmd_pub.publish(Twist(linear=Vector3(x=state["v"])))
        return False

    def settled(pose: tuple[float, float, float], v: float) -> float:
        """What the monitor sends once it has this pose and command (the last of ~1 s)."""
        state["pose"], state["v"] = pose, v
        since = time.monotonic() + 0.5
        watcher.spin_until(drive, 1.5)
        sent = [x for when, x in watcher.cmds if when > since]
        assert sent, f"the monitor sent nothing for pose {pose} at {v} m/s"
        assert max(sent) - min(sent) < 1e-9, f"not settled at pose {pose}: {sent}"
        return sent[-1]

    assert watcher.spin_until(lambda: drive() or any(x == 0.3 for _, x in watcher.cmds), 30.0)
    # Commands can pass before the first odometry arrives; a contact then is placed along the
    # motion, not at its world point. Touch only once the monitor says it has the pose.
    assert watcher.spin_until(
        lambda: drive() or any(d.get("pose") == "odom" for d in watcher.diagnostics), 30.0
    ), f"the monitor never reported a pose: {watcher.diagnostics[-1:]}"
    msg = contacts_to_msg([WALL], sec_to_stamp(0.0))
    assert len(msg.position) == len(msg.normal) == 1
    contacts_pub.publish(msg)
    contacts_pub.publish(Contacts())  # the touch ends; the surface is remembered
    gate = _in_process_gate(msg)

    cases = {
        "into the wall at contact": ((0.0, 0.0, 0.0), 0.3),
        "into the wall 10 cm back": ((-0.1, 0.0, 0.0), 0.4),
        "away from the wall": ((0.0, 0.0, 0.0), -0.3),
        "along the wall (facing north)": ((-0.1, 0.0, math.pi / 2), 0.4),
    }
    sent = {name: settled(pose, v) for name, (pose, v) in cases.items()}
    expected = {name: _gate_passes(gate, pose, v) for name, (pose, v) in cases.items()}
    assert sent == pytest.approx(expected, abs=1e-6), (sent, expected)
    assert sent["into the wall at contact"] == 0.0
    assert 0.0 < sent["into the wall 10 cm back"] < 0.4  # limited, not stopped
    assert sent["away from the wall"] == pytest.approx(-0.3)
    assert sent["along the wall (facing north)"] == pytest.approx(0.4)
