"""Gazebo (gz-sim) world + bridge + policy + safety monitor, all on sim time. Full installs only:
needs ros_gz_sim and ros_gz_bridge (`apt install ros-$ROS_DISTRO-ros-gz`).

    ros2 launch vla_pruned_ros gazebo.launch.py instruction:="go to the red marker"
    ros2 launch vla_pruned_ros gazebo.launch.py artifact:=A adapter:=openvla trust_remote_code:=true

`artifact` and the adapter arguments (`adapter`, `adapter_options`, `unnorm_key`,
`trust_remote_code`: POLICY_LAUNCH_ARGUMENTS, the ones robot.launch.py declares) pass through to
robot.launch.py unchanged (empty: as config/bringup_gazebo.yaml says).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vla_pruned_ros.bringup import POLICY_LAUNCH_ARGUMENTS


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vla_pruned_ros")
    world = PathJoinSubstitution([share, "worlds", "nav_arena.sdf"])
    gz_launch = PathJoinSubstitution([FindPackageShare("ros_gz_sim"), "launch", "gz_sim.launch.py"])
    robot_launch = PathJoinSubstitution([share, "launch", "robot.launch.py"])
    return LaunchDescription(
        [
            *(DeclareLaunchArgument(k, default_value="") for k in POLICY_LAUNCH_ARGUMENTS),
            DeclareLaunchArgument("instruction", default_value="go to the red marker"),
            DeclareLaunchArgument("headless", default_value="-s --headless-rendering"),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(gz_launch),
                launch_arguments={
                    "gz_args": ["-r ", LaunchConfiguration("headless"), " ", world]
                }.items(),
            ),
            Node(
                package="ros_gz_bridge",
                executable="parameter_bridge",
                name="gz_bridge",
                output="screen",
                parameters=[
                    {
                        "config_file": PathJoinSubstitution([share, "config", "gz_bridge.yaml"]),
                        "use_sim_time": True,
                    }
                ],
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(robot_launch),
                launch_arguments={  # config/bringup_gazebo.yaml: both nodes on sim time
                    "bringup": PathJoinSubstitution([share, "config", "bringup_gazebo.yaml"]),
                    **{k: LaunchConfiguration(k) for k in POLICY_LAUNCH_ARGUMENTS},
                }.items(),
            ),
            ExecuteProcess(  # the instruction is latched (transient local), so once is enough
                cmd=[
                    "ros2",
                    "topic",
                    "pub",
                    "--once",
                    "--qos-durability",
                    "transient_local",
                    "--qos-reliability",
                    "reliable",
                    "instruction",
                    "std_msgs/msg/String",
                    ["{data: '", LaunchConfiguration("instruction"), "'}"],
                ],
                output="screen",
            ),  # fmt: skip
        ]
    )
