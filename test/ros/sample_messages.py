"""Fully populated instances of our custom messages, shared by the test and its child process."""

from __future__ import annotations

from typing import Any

from vla_pruned_ros_msgs.msg import SafetyEvent, SafetyStatus, VLAAction


def make(name: str) -> Any:
    if name == "VLAAction":
        msg = VLAAction(action=[0.25, -1.5], names=["linear_x", "angular_z"])
        msg.action_space, msg.instruction = "base_velocity", "go to the red marker"
        msg.variant, msg.rank, msg.model_id, msg.latency_ms = "gluestick", 32, "embedded@abc", 4.5
    elif name == "SafetyEvent":
        msg = SafetyEvent(category=SafetyEvent.COLLISION, severity=SafetyEvent.ERROR)
        msg.episode_id, msg.value, msg.threshold = "ep-7", 0.42, 1e-3
        msg.text = "base touched wall_north"
    elif name == "SafetyStatus":
        msg = SafetyStatus(
            episode_id="ep-7", episode_active=True, categories=["collision", "speed"]
        )
        msg.counts, msg.total_violations, msg.unsafe = [2, 1], 3, True
        msg.gate, msg.stop_reason, msg.time_to_stop = SafetyStatus.GATE_STOP, "collision", 0.05
    else:
        raise KeyError(name)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 12, 345, "camera"
    return msg


NAMES = ["VLAAction", "SafetyEvent", "SafetyStatus"]
