"""The parameters our nodes really declare, read from real node instances (one rclpy context, the
nodes created and destroyed in turn): what the launch-file and naming checks compare the YAML and
launch files against."""

from __future__ import annotations

import rclpy

from vla_pruned_ros.ros.bag_player_node import BagPlayerParameters
from vla_pruned_ros.ros.policy_node import PolicyNode
from vla_pruned_ros.ros.safety_monitor_node import SafetyMonitorNode
from vla_pruned_ros.ros.sim_node import SimNode

NODE_CLASSES = [PolicyNode, SafetyMonitorNode, SimNode, BagPlayerParameters]


def declared_parameters() -> dict[str, dict[str, object]]:
    """ROS node name -> {parameter: default}, `use_sim_time` (which rclpy adds) included."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        result = {}
        for cls in NODE_CLASSES:
            node = cls(context=context)
            params = node.get_parameters_by_prefix("")
            result[node.get_name()] = {n: p.value for n, p in params.items()}
            if hasattr(node, "task"):
                node.task.close()
            node.destroy_node()
        return result
    finally:
        rclpy.shutdown(context=context)
