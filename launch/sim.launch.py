"""Simulation: the MuJoCo task node, the policy and the safety monitor, all on sim time.

    ros2 launch vla_pruned_ros sim.launch.py task:=nav episodes:=10 artifact:=embedded

The graph is `config/bringup_<task>.yaml`, the file `vla-ros up config/bringup_<task>.yaml`
runs: nodes, parameter files and overrides come from there (`vla_pruned_ros/bringup.py`), and
the arguments below only add overrides (empty: as the file says; the policy takes
`artifact` and the adapter arguments, POLICY_LAUNCH_ARGUMENTS). The policy node is a
`LifecycleNode` driven configure -> activate, each result checked (`launch_graph.py`).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from vla_pruned_ros.bringup import (
    POLICY_LAUNCH_ARGUMENTS,
    launch_nodes,
    policy_overrides,
    typed_overrides,
)
from vla_pruned_ros.launch_graph import node_actions
from vla_pruned_ros.paths import package_file
from vla_pruned_ros.sim.registry import TASKS


def _graph(context) -> list:
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bringup = package_file(f"config/bringup_{arg('task')}.yaml")
    extra = {
        "sim_node": typed_overrides({"episodes": arg("episodes")}),
        "policy_node": policy_overrides({k: arg(k) for k in POLICY_LAUNCH_ARGUMENTS}),
    }
    return node_actions(launch_nodes(bringup, extra))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("task", default_value="nav", choices=list(TASKS)),
            DeclareLaunchArgument("episodes", default_value=""),
            *(DeclareLaunchArgument(k, default_value="") for k in POLICY_LAUNCH_ARGUMENTS),
            OpaqueFunction(function=_graph),
        ]
    )
