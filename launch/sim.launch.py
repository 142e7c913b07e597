"""Simulation: the MuJoCo task node, the policy and the safety monitor, all on sim time.

    ros2 launch vla_pruned_ros sim.launch.py task:=nav episodes:=10 artifact:=embedded

The same graph runs without ros2 launch as `vla-ros up config/bringup_nav.yaml`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vla_pruned_ros")
    config = PathJoinSubstitution([share, "config"])
    task = LaunchConfiguration("task")
    safety = PythonExpression(
        ["'safety_monitor.yaml' if '", task, "' == 'nav' else 'safety_manip.yaml'"]
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("task", default_value="nav", choices=["nav", "manip"]),
            DeclareLaunchArgument("episodes", default_value="0"),
            DeclareLaunchArgument("artifact", default_value="embedded"),
            Node(
                package="vla_pruned_ros",
                executable="sim_node",
                name="vla_sim",
                output="screen",
                parameters=[
                    PathJoinSubstitution([config, ["sim_", task, ".yaml"]]),
                    {"episodes": LaunchConfiguration("episodes")},
                ],
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution([share, "launch", "robot.launch.py"])
                ),
                launch_arguments={
                    "use_sim_time": "true",
                    "artifact": LaunchConfiguration("artifact"),
                    "policy_params": PathJoinSubstitution([config, ["policy_", task, ".yaml"]]),
                    "safety_params": PathJoinSubstitution([config, safety]),
                }.items(),
            ),
        ]
    )
