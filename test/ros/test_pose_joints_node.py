"""A robot without odometry placed by its joints over real DDS: the tabletop pusher publishes
only /joint_states (slide joints x, y = its world position, the contact points' frame), and the
real safety monitor process with the manipulation YAML (`pose_joints: [x, y]`) places a block
contact from those joint positions. For each pose and command it sends exactly what the
in-process gate (`evaluation.gated_loop`'s configuration, which knows the pose) lets through;
without a pose (odometry that never comes, the node before `pose_joints`) the monitor's answer
would differ. Also: the frames agree in the simulator (a pusher contact's world point lies on
the pusher's sphere around its joint position), and a bad runtime `pose_joints` is refused with
the reason."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import Twist, Vector3
from monitor_process import camera_less_monitor
from sensor_msgs.msg import JointState
from vla_pruned_ros_msgs.msg import Contacts

from vla_pruned_ros.evaluation.gated_loop import gate_config
from vla_pruned_ros.monitor import SafetyMonitor
from vla_pruned_ros.monitor.limits import TASK_SAFETY_CONFIG
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import contacts_from_msg, contacts_to_msg, sec_to_stamp
from vla_pruned_ros.sim.base import ContactRecord

ROOT = Path(__file__).resolve().parents[2]
HOME = (0.1, 0.05)  # where the joint states place the pusher when it touches the block
# A (non-target) block just east of the pusher, reported block first: its normal points from
# the block into the pusher, so the monitor must reverse it with the sides.
BLOCK = ContactRecord("block_blue", "pusher", 5.0, (HOME[0] + 0.025, HOME[1], 0.02), (-1, 0, 0))


@pytest.fixture
def monitor(tmp_path: Path):
    with camera_less_monitor(ROOT / TASK_SAFETY_CONFIG["manip"], tmp_path) as watcher:
        yield watcher


def _gate(msg: Contacts, placed: bool) -> SafetyMonitor:
    """The manipulation gate given the message's contacts: `placed`, as the in-process gate
    (pose known, contact point and normal used); otherwise as the monitor without a pose (no
    pose ever, each contact placed along the motion)."""
    limits, zones = gate_config("manip", "direction")
    gate = SafetyMonitor(limits, now=0.0, zones=zones)
    gate.on_command([0.3, 0.0, 0.0], [0.0] * 3, 0.0)
    contacts, points, normals = contacts_from_msg(msg, ("pusher",))
    if placed:
        gate.on_pose(*HOME, 0.0)
        gate.on_contacts(contacts, 0.0, points=points, normals=normals)
    else:
        gate.on_contacts(contacts, 0.0)
    gate.on_contacts([], 0.1)
    return gate


def _gate_passes(gate: SafetyMonitor, xy: tuple[float, float], v: float, placed: bool) -> float:
    if placed:
        gate.on_pose(*xy, 0.0)
    gate.on_command([v, 0.0, 0.0], [0.0] * 3, 1.0)
    if gate.decide(1.0).stop:
        return 0.0
    return gate.clamp([v, 0.0, 0.0], [0.0] * 3)[0][0]


def test_monitor_places_a_contact_from_pose_joints_as_the_in_process_gate_does(monitor) -> None:
    watcher, node = monitor, monitor.node
    cmd_pub = node.create_publisher(Twist, topics.CMD_RAW, 10)
    contacts_pub = node.create_publisher(Contacts, topics.CONTACTS, topics.EVIDENCE_DEPTH)
    joints_pub = node.create_publisher(JointState, topics.JOINT_STATES, 10)
    state = {"v": 0.3, "xy": HOME, "next": 0.0}

    def drive() -> bool:
        """Publish the joint states (as sim_node does for the pusher) and the command at ~10 Hz
        while spinning."""
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + 0.1
            joints_pub.publish(JointState(name=["x", "y"], position=list(state["xy"])))
            cmd_pub.publish(Twist(linear=Vector3(x=state["v"])))
        return False

    def settled(xy: tuple[float, float], v: float) -> float:
        """What the monitor sends once it has this position and command (the last of ~1 s)."""
        state["xy"], state["v"] = xy, v
        since = time.monotonic() + 0.5
        watcher.spin_until(drive, 1.5)
        sent = [x for when, x in watcher.cmds if when > since]
        assert sent, f"the monitor sent nothing at {xy} for {v} m/s"
        assert max(sent) - min(sent) < 1e-9, f"not settled at {xy}: {sent}"
        return sent[-1]

    assert watcher.spin_until(lambda: drive() or any(x == 0.3 for _, x in watcher.cmds), 30.0)
    settled(HOME, 0.3)
    # The joint states have placed the pusher before the touch (a contact before a pose is
    # placed along the motion instead): the monitor's /diagnostics say where its pose is from.
    assert watcher.spin_until(
        lambda: drive() or any(d.get("pose") == "pose_joints" for d in watcher.diagnostics), 30.0
    ), f"the monitor never reported a pose from its joints: {watcher.diagnostics[-1:]}"
    msg = contacts_to_msg([BLOCK], sec_to_stamp(0.0))
    contacts_pub.publish(msg)
    contacts_pub.publish(Contacts())  # the touch ends; the surface is remembered

    cases = {
        "into the block at contact": (HOME, 0.3),
        "into the block 5 cm back": ((HOME[0] - 0.05, HOME[1]), 0.4),
        "into the block 20 cm back": ((HOME[0] - 0.2, HOME[1]), 0.4),
        "away from the block": (HOME, -0.3),
    }
    sent = {name: settled(xy, v) for name, (xy, v) in cases.items()}
    placed, unplaced = _gate(msg, placed=True), _gate(msg, placed=False)
    expected = {name: _gate_passes(placed, xy, v, True) for name, (xy, v) in cases.items()}
    unposed = {name: _gate_passes(unplaced, xy, v, False) for name, (xy, v) in cases.items()}
    assert sent == pytest.approx(expected, abs=1e-6), (sent, expected)
    assert sent["into the block at contact"] < 0.3  # limited at the block
    assert sent["into the block 20 cm back"] == pytest.approx(0.4)  # far from it: passes
    assert sent["away from the block"] == pytest.approx(-0.3)
    # Without the pose the pusher stays where the touch was, so 20 cm back it is still held.
    assert unposed["into the block 20 cm back"] < 0.4, unposed
    assert unposed != pytest.approx(sent, abs=1e-6), (unposed, sent)

    [bad] = watcher.set_parameters(pose_joints=["x"])
    assert not bad.successful and "pose_joints must name 2 or 3" in bad.reason, bad.reason


def test_pusher_joint_positions_are_in_the_contact_points_frame() -> None:
    """The pusher's joints x, y (what sim_node publishes on /joint_states) are its world position:
    every pusher contact's world point lies on its sphere around them."""
    from vla_pruned_ros.sim.manip import TIP_R, ManipTask

    task = ManipTask(image_size=32)
    task.reset(1_000_046)
    seen = 0
    for _ in range(150):
        tip = task.tip()
        goal = task.block_xy(task.target) - tip
        task.step(np.clip(goal * 20, -0.3, 0.3))
        for c in task.step_contacts:
            if "pusher" in (c.body, c.other) and "table" not in (c.body, c.other):
                gap = np.linalg.norm(np.array(c.position[:2]) - task.tip())
                assert gap <= TIP_R + 0.01, (c, task.tip())
                seen += 1
        if seen >= 3:
            break
    assert seen, "the pusher never touched anything"
