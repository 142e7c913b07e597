"""Rosbag replay evaluation: `ros2 bag play --clock` drives the policy and the monitor on sim time.

    ros2 launch vla_pruned_ros replay.launch.py bag:=/path/to/bag rate:=1.0

Without a full ROS install, `vla-bag play` publishes a bag the same way (see README).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    launch_dir = PathJoinSubstitution([FindPackageShare("vla_pruned_ros"), "launch"])
    config = PathJoinSubstitution([FindPackageShare("vla_pruned_ros"), "config"])
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 folder to replay"),
            DeclareLaunchArgument("rate", default_value="1.0"),
            DeclareLaunchArgument("artifact", default_value="embedded"),
            DeclareLaunchArgument(
                "policy_params", default_value=PathJoinSubstitution([config, "policy_nav.yaml"])
            ),
            DeclareLaunchArgument(
                "safety_params",
                default_value=PathJoinSubstitution([config, "safety_monitor.yaml"]),
            ),
            ExecuteProcess(
                cmd=[
                    "ros2",
                    "bag",
                    "play",
                    LaunchConfiguration("bag"),
                    "--clock",
                    "--rate",
                    LaunchConfiguration("rate"),
                ],
                output="screen",
            ),  # fmt: skip
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution([launch_dir, "robot.launch.py"])
                ),
                launch_arguments={
                    "use_sim_time": "true",
                    "artifact": LaunchConfiguration("artifact"),
                    "policy_params": LaunchConfiguration("policy_params"),
                    "safety_params": LaunchConfiguration("safety_params"),
                }.items(),
            ),
        ]
    )
