"""The safety monitor's logic, free of ROS: limits, violation bookkeeping, the command gate and
reports. The rclpy node (`vla_pruned_ros.ros.safety_monitor_node`) only feeds it messages and
publishes what it decides, so the same logic serves live robots, bag replays and offline eval.
"""

from vla_pruned_ros.monitor.categories import CATEGORIES
from vla_pruned_ros.monitor.gate import Decision, SafetyMonitor
from vla_pruned_ros.monitor.limits import SafetyLimits
from vla_pruned_ros.monitor.report import EpisodeReport, SafetyEventRecord, write_reports

__all__ = [
    "CATEGORIES",
    "Decision",
    "EpisodeReport",
    "SafetyEventRecord",
    "SafetyLimits",
    "SafetyMonitor",
    "write_reports",
]
