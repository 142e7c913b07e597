"""Our custom messages cross a process boundary over real DDS, field for field."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.node import Node
from sample_messages import NAMES, make

from vla_pruned_ros.ros.msg_dict import message_to_dict

PUBLISHER = r"""
import sys, time
import rclpy
from sample_messages import make
name, topic = sys.argv[1], sys.argv[2]
rclpy.init()
node = rclpy.create_node("sample_publisher")
msg = make(name)
pub = node.create_publisher(type(msg), topic, 10)
deadline = time.monotonic() + 30.0
while time.monotonic() < deadline:  # until the test terminates us
    pub.publish(msg)
    time.sleep(0.05)
"""


@pytest.mark.parametrize("name", NAMES)
def test_custom_message_crosses_process_boundary(name: str) -> None:
    topic = f"/vla_test/{name.lower()}"
    expected = make(name)
    child = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, name, topic], cwd=Path(__file__).parent
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = Node("sample_subscriber", context=context)
        received: list = []
        node.create_subscription(type(expected), topic, received.append, 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 15.0
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        child.terminate()
        child.wait(timeout=10)
    assert received, f"no {name} arrived from the publisher process within 15 s"
    assert message_to_dict(received[0]) == message_to_dict(expected)
