"""On a robot: the VLA policy node and the safety monitor (command gate) from parameter files.

    ros2 launch vla_pruned_ros robot.launch.py artifact:=/path/to/artifact \
        policy_params:=/path/policy.yaml safety_params:=/path/safety.yaml

The policy publishes cmd_vel_raw; only the safety monitor publishes cmd_vel to the robot.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("vla_pruned_ros"), "config"])
    use_sim_time = LaunchConfiguration("use_sim_time")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "policy_params", default_value=PathJoinSubstitution([config, "policy_nav.yaml"])
            ),
            DeclareLaunchArgument(
                "safety_params",
                default_value=PathJoinSubstitution([config, "safety_monitor.yaml"]),
            ),
            DeclareLaunchArgument("artifact", default_value="embedded"),
            DeclareLaunchArgument("use_sim_time", default_value="false"),
            Node(
                package="vla_pruned_ros",
                executable="policy_node",
                name="vla_policy",
                output="screen",
                parameters=[
                    LaunchConfiguration("policy_params"),
                    {"artifact": LaunchConfiguration("artifact"), "use_sim_time": use_sim_time},
                ],
            ),
            Node(
                package="vla_pruned_ros",
                executable="safety_monitor",
                name="safety_monitor",
                output="screen",
                parameters=[LaunchConfiguration("safety_params"), {"use_sim_time": use_sim_time}],
            ),
        ]
    )
