"""Renamed parameters: the one table of old -> new names, and the one way a node still takes an old
name for a while.

The names follow one scheme (`vla_pruned_ros/topic_names.py`: a topic parameter is named for the
topic's role, the same on every node). A user's parameter file or `-p` written before the renames
keeps working: a node given an old name uses its value for the new name and logs one warning
naming both, so the file can be fixed at leisure. When both names are given, the new one wins
(the warning says the old value was ignored), as a user who has started renaming would expect.
Old names are read at start only: they are not declared, so `ros2 param list` shows the new
names alone and `ros2 param set` on an old name is refused as undeclared.
"""

from __future__ import annotations

from collections.abc import Mapping

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

# Executable -> {old parameter name: new name}. The policy's `cmd_topic` was its output (the raw
# command); in the scheme `cmd_topic` is the gated command, which the policy does not touch.
RENAMED: dict[str, dict[str, str]] = {
    "policy_node": {"image_topic": "camera_topic", "cmd_topic": "cmd_raw_topic"},
    "safety_monitor_node": {"cmd_in_topic": "cmd_raw_topic", "cmd_out_topic": "cmd_topic"},
}


def _given(node: Node, name: str) -> object | None:
    """The value a parameter file or `-p` gave for `name`, or None when none did. Declared
    (untyped, so any given type is read) and undeclared again, so it leaves no trace and the node
    may then declare `name` with its own type and descriptor."""
    node.declare_parameter(name, None, ParameterDescriptor(dynamic_typing=True))
    try:
        return node.get_parameter(name).value
    finally:
        node.undeclare_parameter(name)


def renamed_defaults(
    node: Node, executable: str, defaults: Mapping[str, object]
) -> dict[str, object]:
    """`defaults` (new name -> default) with the value given under each old name of
    `executable` (RENAMED) as its new name's default, so declaring the new name takes it unless
    the new name is given too (then the new one wins). Logs one deprecation warning per old
    name given. Call before declaring the renamed parameters."""
    out = dict(defaults)
    for old, new in RENAMED.get(executable, {}).items():
        value = _given(node, old)
        if value is None:
            continue
        if _given(node, new) is None:
            out[new] = value
            node.get_logger().warning(
                f"parameter '{old}' is deprecated, renamed '{new}': using {old}={value!r} as "
                f"{new} (rename it in your parameter file)"
            )
        else:
            node.get_logger().warning(
                f"parameter '{old}' is deprecated, renamed '{new}': {old}={value!r} is ignored "
                f"because {new} is also given (the new name wins)"
            )
    return out
