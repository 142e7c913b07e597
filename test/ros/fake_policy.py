"""A stand-in for the policy side of the graph, run as its own process by the tests: it publishes
a forward Twist, a camera image and a VLAAction heartbeat at 10 Hz, so the test can kill it or
stall its camera and watch what the safety monitor does."""

import argparse
import time

import rclpy
from geometry_msgs.msg import Twist
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from vla_pruned_ros_msgs.msg import VLAAction

from vla_pruned_ros.ros import topics

parser = argparse.ArgumentParser()
parser.add_argument("--stall-camera-after", type=float, default=1e9)
args = parser.parse_args()

rclpy.init()
node = rclpy.create_node("fake_policy")
cmd = node.create_publisher(Twist, topics.CMD_RAW, 10)
cam = node.create_publisher(Image, topics.CAMERA, qos_profile_sensor_data)
act = node.create_publisher(VLAAction, topics.ACTION, 10)
start = time.monotonic()
while rclpy.ok():
    now = node.get_clock().now().to_msg()
    if time.monotonic() - start < args.stall_camera_after:
        img = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
        img.header.stamp = now
        cam.publish(img)
    twist = Twist()
    twist.linear.x = 0.2
    cmd.publish(twist)
    action = VLAAction(action=[0.2, 0.0], names=["linear_x", "angular_z"])
    action.header.stamp = now
    act.publish(action)
    time.sleep(0.1)
