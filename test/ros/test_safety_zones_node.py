"""The direction-aware gate over real DDS: the safety monitor as a real process with
`zones.direction_aware: true` (config/safety_monitor_nav.yaml) sees a contact while the robot drives
forward, then keeps blocking forward commands well past `stop_hold_s` (where the stop-and-hold
gate released and the policy drove into the same wall again, issue 18) while reversing away
passes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from geometry_msgs.msg import Twist, Vector3
from monitor_process import camera_less_monitor
from nav_msgs.msg import Odometry
from vla_pruned_ros_msgs.msg import Contacts

from vla_pruned_ros.ros import topics

ROOT = Path(__file__).resolve().parents[2]
HOLD_S = 0.5


@pytest.fixture
def monitor(tmp_path: Path):
    params = ROOT / "config" / "safety_monitor_nav.yaml"
    with camera_less_monitor(params, tmp_path, "-p", f"limits.stop_hold_s:={HOLD_S}") as watcher:
        yield watcher


def test_monitor_blocks_the_command_toward_a_contact_and_passes_one_away(monitor) -> None:
    watcher = monitor
    node = watcher.node
    cmd_pub = node.create_publisher(Twist, topics.CMD_RAW, 10)
    contacts_pub = node.create_publisher(Contacts, topics.CONTACTS, topics.EVIDENCE_DEPTH)
    odom_pub = node.create_publisher(Odometry, topics.ODOM, 10)
    state = {"v": 0.3, "next": 0.0}

    def drive() -> bool:
        """Publish the current command and pose at ~10 Hz while spinning."""
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + 0.1
            cmd_pub.publish(Twist(linear=Vector3(x=state["v"])))
            odom = Odometry()
            odom.pose.pose.orientation.w = 1.0  # at the origin, facing +x
            odom_pub.publish(odom)
        return False

    def passed(v: float, since: float) -> bool:
        drive()
        return any(when > since and x == pytest.approx(v) for when, x in watcher.cmds)

    assert watcher.spin_until(lambda: passed(0.3, 0.0), 30.0), "forward never passed at first"
    touch = Contacts(body_a=["base"], body_b=["wall_e"], force=[5.0])
    contacts_pub.publish(touch)  # no contact geometry: placed where the robot was driving
    t_touch = time.monotonic()
    watcher.spin_until(lambda: drive() or any(
        when > t_touch and x == 0.0 for when, x in watcher.cmds), 10.0)  # fmt: skip
    contacts_pub.publish(Contacts())  # the contact ends
    t_blocked = max(when for when, x in watcher.cmds if x == 0.0)
    watcher.spin_until(drive, 4 * HOLD_S + 1.0)  # far past the hold the old gate released at
    forward_after = [x for when, x in watcher.cmds if when > t_blocked + 0.3]
    assert forward_after, "the monitor sent nothing while the policy pushed forward"
    assert all(x == 0.0 for x in forward_after), "drove into the contact again after the hold"
    state["v"] = -0.3
    t_back = time.monotonic()
    assert watcher.spin_until(lambda: passed(-0.3, t_back), 10.0), "backing away was blocked"
