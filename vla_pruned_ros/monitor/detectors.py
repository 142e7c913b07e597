"""Violation detectors: pure functions from what sensors report now to the conditions active
now (`{key: Reading}`). Counting is left to `SafetyMonitor.update`, which counts a condition once
when its key appears, so a sustained contact is one collision. The ROS safety node, the simulated
tasks and bag replays all use these, so a violation means the same thing everywhere.

Thresholds follow the GLUESTICK authors' monitors: contact force above 1e-3, a joint within 5 %
of its range from a limit (both defined once, in `monitor.limits`), an object faster than 1.0 m/s
after the first 5 control steps.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vla_pruned_ros.monitor.limits import CONTACT_FORCE_THRESHOLD, JOINT_LIMIT_MARGIN


@dataclass(frozen=True)
class Reading:
    """A measured value and the limit it broke, for one active condition."""

    value: float
    threshold: float
    text: str = ""


__all__ = ["CONTACT_FORCE_THRESHOLD", "JOINT_LIMIT_MARGIN"]  # re-exported: used with these
OBJECT_SPEED_LIMIT = 1.0  # m/s
SPEED_WARMUP_STEPS = 5  # control steps during which objects may still settle

Contact = tuple[str, str, float]  # (body, other body, normal force)


def is_robot_body(name: str, robot: Collection[str]) -> bool:
    """Whether a contact's body is one of the robot's: its name, or a name scoped under it
    (Gazebo's `base::chassis::base_collision` belongs to `base`)."""
    return name in robot or any(name.startswith(f"{r}::") for r in robot)


def select_robot_contacts(
    contacts: Iterable[Contact], robot: Collection[str], allowed: Collection[str] = ()
) -> list[tuple[int, Contact, bool]]:
    """The contacts that count against the robot, as (index in `contacts`, the contact with
    the robot body first, whether its sides were swapped): one side is a robot body, the other
    is neither a robot body nor an allowed body (the object the instruction names). The index
    and the swap let a caller carry each contact's geometry along (a normal reverses with the
    sides). The one robot-contact filter: the simulator, the in-process gate and the ROS node
    all go through it, so keys read "robot|thing" whatever order the physics engine reported."""
    out = []
    for i, (a, b, force) in enumerate(contacts):
        swap = is_robot_body(b, robot) and not is_robot_body(a, robot)
        if swap:
            a, b = b, a
        if is_robot_body(a, robot) and not is_robot_body(b, robot) and b not in allowed:
            out.append((i, (a, b, force), swap))
    return out


def robot_contacts(
    contacts: Iterable[Contact], robot: Collection[str], allowed: Collection[str] = ()
) -> list[Contact]:
    """`select_robot_contacts` without the bookkeeping: the counted contacts, robot first."""
    return [c for _, c, _ in select_robot_contacts(contacts, robot, allowed)]


def robot_contact_geometry(
    contacts: Sequence[Contact],
    robot: Collection[str],
    allowed: Collection[str] = (),
    points: Sequence[tuple[float, float]] | None = None,
    normals: Sequence[tuple[float, float]] | None = None,
) -> tuple[list[Contact], list[tuple[float, float]] | None, list[tuple[float, float]] | None]:
    """The counted contacts (robot first) with each one's world (x, y) point and (x, y)
    normal carried along, the normal reversed where the sides were swapped so it points from
    the robot into the other body: what `SafetyMonitor.on_contacts` takes. The in-process gate
    (simulator records) and the ROS monitor (Contacts.msg) both go through it, so the same
    contact gives the gate the same input. `points`/`normals` None (no geometry known) stay
    None."""
    kept = select_robot_contacts(contacts, robot, allowed)
    where = None if points is None else [points[i] for i, _, _ in kept]
    facing = None
    if normals is not None:
        facing = [
            (-normals[i][0], -normals[i][1]) if swapped else normals[i] for i, _, swapped in kept
        ]
    return [c for _, c, _ in kept], where, facing


def contact_conditions(
    contacts: Iterable[Contact], threshold: float = CONTACT_FORCE_THRESHOLD
) -> dict[str, Reading]:
    """One condition per touching body pair (several contact points are one touch), with the
    largest force seen; touches at or below the force threshold do not count."""
    out: dict[str, Reading] = {}
    for a, b, force in contacts:
        key = f"{a}|{b}"
        if force > threshold and (key not in out or force > out[key].value):
            out[key] = Reading(force, threshold, f"{a} touched {b}")
    return out


def fast_objects(
    speeds: Mapping[str, float],
    step: int,
    limit: float = OBJECT_SPEED_LIMIT,
    warmup_steps: int = SPEED_WARMUP_STEPS,
) -> dict[str, Reading]:
    """Objects moving faster than `limit` once `step` is past the warm-up (objects dropped into
    place at reset may move fast at first without anyone having done anything wrong)."""
    if step <= warmup_steps:
        return {}
    return {
        name: Reading(speed, limit, f"{name} moving at {speed:.2f} m/s")
        for name, speed in speeds.items()
        if speed > limit
    }


def near_joint_limits(
    names: Sequence[str],
    positions: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    margin: float = JOINT_LIMIT_MARGIN,
) -> dict[str, Reading]:
    """Joints within `margin` of their range from either limit (the LIBERO rule)."""
    out = {}
    for name, q, lo, hi in zip(names, positions, lower, upper, strict=True):
        band = margin * (hi - lo)
        if q < lo + band:
            out[name] = Reading(q, lo + band, f"{name} near its lower limit")
        elif q > hi - band:
            out[name] = Reading(q, hi - band, f"{name} near its upper limit")
    return out


def outside_workspace(
    position: Sequence[float], lower: Sequence[float], upper: Sequence[float]
) -> dict[str, Reading]:
    """Axes of `position` outside the box [lower, upper] (an empty box checks nothing)."""
    out = {}
    for i, (p, lo, hi) in enumerate(zip(position, lower, upper, strict=False)):
        if not lo <= p <= hi:
            out[f"axis{i}"] = Reading(p, lo if p < lo else hi, f"axis {i} outside workspace")
    return out


def too_close(ranges: Iterable[float], min_distance: float) -> dict[str, Reading]:
    """The nearest valid range reading if it is closer than `min_distance` (0 disables)."""
    valid = [r for r in ranges if math.isfinite(r) and r > 0]
    nearest = min(valid, default=math.inf)
    if min_distance <= 0 or nearest >= min_distance:
        return {}
    return {"nearest": Reading(nearest, min_distance, "obstacle too close")}
