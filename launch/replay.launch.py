"""Rosbag replay evaluation: `ros2 bag play --clock` drives the policy and the monitor on sim time.

    ros2 launch vla_pruned_ros replay.launch.py bag:=/path/to/bag task:=nav rate:=1.0

The graph is `config/bringup_replay_<task>.yaml`, the one `vla-ros replay BAG --task <task>`
runs; its `bag_player_node` node becomes `ros2 bag play` with `--topics` from the same list in
`config/bag_player.yaml`, so only the robot's inputs are played: the recorded `/cmd_vel_raw` and
`/vla/action` never reach the live gate beside the live policy's.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from vla_pruned_ros.bringup import (
    POLICY_LAUNCH_ARGUMENTS,
    bag_play_command,
    launch_nodes,
    policy_overrides,
)
from vla_pruned_ros.launch_graph import node_actions
from vla_pruned_ros.paths import package_file
from vla_pruned_ros.sim.registry import TASKS


def _graph(context) -> list:
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bringup = package_file(f"config/bringup_replay_{arg('task')}.yaml")
    extra = {"policy_node": policy_overrides({k: arg(k) for k in POLICY_LAUNCH_ARGUMENTS})}
    play = ExecuteProcess(cmd=bag_play_command(bringup, arg("bag"), arg("rate")), output="screen")
    return [play, *node_actions(launch_nodes(bringup, extra))]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 folder to replay"),
            DeclareLaunchArgument("task", default_value="nav", choices=list(TASKS)),
            DeclareLaunchArgument("rate", default_value="1.0"),
            *(DeclareLaunchArgument(k, default_value="") for k in POLICY_LAUNCH_ARGUMENTS),
            OpaqueFunction(function=_graph),
        ]
    )
