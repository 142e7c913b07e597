"""A stand-in for the policy side of the graph, run as its own process by the tests: it publishes
a forward Twist, a camera image and a VLAAction heartbeat at 10 Hz, so the test can kill it or
stall its camera and watch what the safety monitor does.

The camera stalls on SIGUSR1, not on a timer: the test sends it only after it has seen a command
pass, so a slow start (DDS discovery on a loaded CI machine) cannot make the stall come first.

Environment: FAKE_LINEAR_X (the commanded speed, default 0.2), FAKE_CAMERA_AHEAD_S (stamp the
frames this far ahead of the clock: a camera whose clock runs fast, default 0), FAKE_STAMPED=1
(publish TwistStamped commands, stamped FAKE_CMD_AHEAD_S ahead of the clock, default 0).
FAKE_NO_CAMERA=1 publishes no camera at all (a camera topic wired wrong).
On SIGUSR2 the camera's clock jumps 3 s ahead (the bench's clock-skew case)."""

import os
import signal
import time

import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from vla_pruned_ros_msgs.msg import VLAAction

from vla_pruned_ros.ros import topics

camera_live = os.environ.get("FAKE_NO_CAMERA") != "1"
LINEAR_X = float(os.environ.get("FAKE_LINEAR_X", "0.2"))
AHEAD_NS = int(float(os.environ.get("FAKE_CAMERA_AHEAD_S", "0")) * 1e9)
STAMPED = os.environ.get("FAKE_STAMPED") == "1"
CMD_AHEAD_NS = int(float(os.environ.get("FAKE_CMD_AHEAD_S", "0")) * 1e9)


def _stall_camera(_signum: int, _frame: object) -> None:
    global camera_live
    camera_live = False


def _skew_camera(_signum: int, _frame: object) -> None:
    global AHEAD_NS
    AHEAD_NS = int(3e9)


signal.signal(signal.SIGUSR1, _stall_camera)
signal.signal(signal.SIGUSR2, _skew_camera)

rclpy.init()
node = rclpy.create_node("fake_policy")
cmd = node.create_publisher(TwistStamped if STAMPED else Twist, topics.CMD_RAW, 10)
cam = node.create_publisher(Image, topics.CAMERA, qos_profile_sensor_data)
act = node.create_publisher(VLAAction, topics.ACTION, 10)
while rclpy.ok():
    now = node.get_clock().now().to_msg()
    if camera_live:
        img = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
        img.header.stamp = (node.get_clock().now() + Duration(nanoseconds=AHEAD_NS)).to_msg()
        cam.publish(img)
    twist = Twist()
    twist.linear.x = LINEAR_X
    if STAMPED:
        stamped = TwistStamped(twist=twist)
        stamped.header.frame_id = topics.BASE_FRAME
        ahead = node.get_clock().now() + Duration(nanoseconds=CMD_AHEAD_NS)
        stamped.header.stamp = ahead.to_msg()
        cmd.publish(stamped)
    else:
        cmd.publish(twist)
    action = VLAAction(action=[LINEAR_X, 0.0], names=["linear_x", "angular_z"])
    action.header.stamp = now
    act.publish(action)
    time.sleep(0.1)
