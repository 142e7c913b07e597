"""On a robot: the VLA policy node and the safety monitor (command gate).

    ros2 launch vla_pruned_ros robot.launch.py artifact:=/path/to/artifact
    ros2 launch vla_pruned_ros robot.launch.py artifact:=A adapter:=openvla trust_remote_code:=true

The graph is a bringup file (`bringup:=`, default `config/bringup_robot.yaml`), the same one
`vla-ros up` runs; `artifact`, the adapter arguments (`adapter`, `adapter_options`,
`unnorm_key`, `trust_remote_code`: POLICY_LAUNCH_ARGUMENTS) and `use_sim_time` add overrides
(empty: as the file says). The
policy publishes cmd_vel_raw; only the safety monitor publishes cmd_vel to the robot. The policy
node is a `LifecycleNode` driven configure -> activate, each result checked (`launch_graph.py`).
"""

from pathlib import Path

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


def _graph(context) -> list:
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bringup = Path(arg("bringup")) if arg("bringup") else package_file("config/bringup_robot.yaml")
    time = typed_overrides({"use_sim_time": arg("use_sim_time")})
    extra = {
        "policy_node": {**policy_overrides({k: arg(k) for k in POLICY_LAUNCH_ARGUMENTS}), **time},
        "safety_monitor_node": time,
    }
    return node_actions(launch_nodes(bringup, extra))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("bringup", default_value=""),
            *(DeclareLaunchArgument(k, default_value="") for k in POLICY_LAUNCH_ARGUMENTS),
            DeclareLaunchArgument("use_sim_time", default_value=""),
            OpaqueFunction(function=_graph),
        ]
    )
