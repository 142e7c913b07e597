"""The simulation node over real DDS: clock, camera, instruction, episodes, and commands that
really move the robot."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import stamp_to_sec
from vla_pruned_ros.ros.sim_node import LATCHED

# the episode topic read with room for "end" and the next "start", published one tick (25 ms
# wall at 4x) apart: a depth-1 reader keeps only the last if the test is slow to take them
EPISODES = QoSProfile(depth=10, reliability=LATCHED.reliability, durability=LATCHED.durability)

ROOT = Path(__file__).resolve().parents[2]


def test_sim_node_runs_episodes_and_obeys_commands(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "vla_pruned_ros.ros.sim_node", "--ros-args",
         "--params-file", str(ROOT / "config/sim_nav.yaml"), "-p", "episodes:=2",
         "-p", "real_time_factor:=4.0", "-p", "settle_s:=3.0", "-p", f"report_dir:={tmp_path}"],
    )  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("sim_watcher", context=context)
    seen: dict[str, list] = {"clock": [], "image": [], "instruction": [], "episode": [], "odom": []}
    node.create_subscription(
        Clock, "/clock", lambda m: seen["clock"].append(stamp_to_sec(m.clock)), 100
    )
    node.create_subscription(Image, topics.CAMERA, seen["image"].append, qos_profile_sensor_data)
    node.create_subscription(
        String, topics.INSTRUCTION, lambda m: seen["instruction"].append(m.data), LATCHED
    )
    node.create_subscription(
        String, topics.EPISODE, lambda m: seen["episode"].append(m.data), EPISODES
    )
    node.create_subscription(Odometry, topics.ODOM, seen["odom"].append, 100)
    cmd = node.create_publisher(Twist, topics.CMD, 10)
    forward = Twist()
    forward.linear.x = 0.3
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 60
        while sim.poll() is None and time.monotonic() < deadline:
            if len(seen["episode"]) >= 3:  # second episode: drive forward
                cmd.publish(forward)
            executor.spin_once(timeout_sec=0.01)
        assert sim.wait(timeout=10) == 0
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert seen["clock"] == sorted(seen["clock"]) and seen["clock"][-1] >= 2 * 15.0 - 0.2
    assert len(seen["image"]) > 100
    image_times = [stamp_to_sec(m.header.stamp) for m in seen["image"]]
    assert image_times == sorted(image_times)
    assert seen["episode"][0].startswith("start nav-1000000") and seen["episode"].count("end") == 2
    assert any(word in seen["instruction"][-1] for word in ("red", "green", "blue", "yellow"))
    results = json.loads((tmp_path / "sim_nav.json").read_text())
    first, second = results["episodes"]
    assert first["path_length"] < 0.01, "no command: the robot must stand still"
    assert second["path_length"] > 1.0, "forward commands must move it"
    speeds = [m.twist.twist.linear.x for m in seen["odom"]]
    assert max(speeds) > 0.25


def test_sim_waits_for_the_policy_then_obeys_twist_stamped_reverse_in_rep105_frames(
    tmp_path: Path,
) -> None:
    """Episodes start only once the awaited lifecycle node is active; /diagnostics says what the
    sim waits for; a TwistStamped reverse command moves the robot and its odometry reads a
    negative forward speed, in REP-105 frames."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from rclpy.lifecycle import LifecycleNode

    sim = subprocess.Popen(
        [sys.executable, "-m", "vla_pruned_ros.ros.sim_node", "--ros-args",
         "--params-file", str(ROOT / "config/sim_nav.yaml"), "-p", "episodes:=1",
         "-p", "real_time_factor:=4.0", "-p", "settle_s:=1.0", "-p", f"report_dir:={tmp_path}",
         "-p", "twist_stamped:=true", "-p", "wait_for_node:=stand_in_policy"],
    )  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("sim_watcher", context=context)
    policy = LifecycleNode("stand_in_policy", context=context)
    from tf2_msgs.msg import TFMessage

    seen: dict[str, list] = {"episode": [], "odom": [], "diag": [], "image": [], "tf": [], "st": []}
    node.create_subscription(TFMessage, "/tf", seen["tf"].append, 100)
    node.create_subscription(TFMessage, "/tf_static", seen["st"].append, LATCHED)
    node.create_subscription(
        String, topics.EPISODE, lambda m: seen["episode"].append(m.data), EPISODES
    )
    node.create_subscription(Odometry, topics.ODOM, seen["odom"].append, 100)
    node.create_subscription(Image, topics.CAMERA, seen["image"].append, qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, seen["diag"].append, 10)
    cmd = node.create_publisher(TwistStamped, topics.CMD, 10)
    back = TwistStamped()
    back.twist.linear.x = -0.3
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(policy)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline and sim.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        return condition()

    def waiting() -> bool:
        return any(
            "waiting for stand_in_policy" in s.message for m in seen["diag"] for s in m.status
        )

    try:
        assert spin_until(waiting, 60), "the sim never said it waits for the policy"
        # Several more wall seconds with the policy inactive: still no episode.
        spin_until(lambda: len(seen["diag"]) >= 5, 30)
        assert not seen["episode"], f"an episode started before the policy was active: {seen}"
        policy.trigger_configure()
        spin_until(lambda: len(seen["diag"]) >= 7, 30)
        assert not seen["episode"], "an inactive (configured) policy is not enough"
        policy.trigger_activate()
        assert spin_until(lambda: seen["episode"], 60), "no episode after the policy was active"
        deadline = time.monotonic() + 60
        while sim.poll() is None and time.monotonic() < deadline:
            cmd.publish(back)
            executor.spin_once(timeout_sec=0.01)
        assert sim.wait(timeout=10) == 0
    finally:
        policy.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)
    speeds = [m.twist.twist.linear.x for m in seen["odom"]]
    assert min(speeds) < -0.2, f"reversing must read negative: {min(speeds)}..{max(speeds)}"
    assert {(m.header.frame_id, m.child_frame_id) for m in seen["odom"]} == {("odom", "base_link")}
    assert {m.header.frame_id for m in seen["image"]} == {"camera_optical_frame"}
    moves = [t for m in seen["tf"] for t in m.transforms]
    assert {(t.header.frame_id, t.child_frame_id) for t in moves} == {("odom", "base_link")}
    assert abs(moves[-1].transform.translation.x - seen["odom"][-1].pose.pose.position.x) < 0.5
    (static,) = [t for m in seen["st"] for t in m.transforms]
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera_optical_frame")
    q = static.transform.rotation  # the optical z axis (the view direction) points forward
    forward_x = 2 * (q.x * q.z + q.w * q.y)
    assert forward_x > 0.8, f"the camera must look along base_link +x: {q}"
    results = json.loads((tmp_path / "sim_nav.json").read_text())
    assert results["episodes"][0]["path_length"] > 1.0, "TwistStamped commands must move it"
