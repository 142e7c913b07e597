"""Action vectors as velocity commands, without ROS: the one mapping from action element names
to Twist fields, used by the ROS conversions, offline bag replay and the in-process gate.

Kept here (not in `ros/`) because the gate's checks run on plain (linear, angular) lists in
layers that must not import ROS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Action element names -> (Twist part, axis): how an action vector drives a velocity-commanded
# robot.
TWIST_FIELDS: dict[str, tuple[str, str]] = {
    "linear_x": ("linear", "x"),
    "linear_y": ("linear", "y"),
    "linear_z": ("linear", "z"),
    "angular_x": ("angular", "x"),
    "angular_y": ("angular", "y"),
    "angular_z": ("angular", "z"),
    "vx": ("linear", "x"),
    "vy": ("linear", "y"),
    "vz": ("linear", "z"),
}
_AXIS = {"x": 0, "y": 1, "z": 2}


def action_to_velocity(
    names: Sequence[str], values: Iterable[float]
) -> tuple[list[float], list[float]]:
    """(linear xyz, angular xyz) from named action elements; names without a Twist field are
    ignored (a gripper, say)."""
    linear, angular = [0.0] * 3, [0.0] * 3
    for name, value in zip(names, values, strict=True):
        if name in TWIST_FIELDS:
            part, axis = TWIST_FIELDS[name]
            (linear if part == "linear" else angular)[_AXIS[axis]] = float(value)
    return linear, angular


def velocity_to_action(
    names: Sequence[str], linear: Sequence[float], angular: Sequence[float]
) -> list[float]:
    """The action elements a (linear, angular) command stands for (the inverse of
    `action_to_velocity`; names without a Twist field read 0)."""
    out = []
    for name in names:
        part, axis = TWIST_FIELDS.get(name, ("", "x"))
        source = linear if part == "linear" else angular if part == "angular" else None
        out.append(0.0 if source is None else float(source[_AXIS[axis]]))
    return out
