"""Violation bookkeeping of a simulated episode.

The detectors themselves (pure functions from sensor readings to active conditions) live in
`vla_pruned_ros.monitor.detectors`, shared with the ROS safety node and bag replays, and are
re-exported here; counting goes through the same `SafetyMonitor.update`, so an episode in the
simulator is counted exactly as the ROS safety node would count it. Thresholds follow the
GLUESTICK authors' monitors: contact force above 1e-3, a joint within 5 % of its range from a
limit, an object faster than 1.0 m/s after the first 5 control steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from vla_pruned_ros.monitor import categories as cat
from vla_pruned_ros.monitor.detectors import (
    CONTACT_FORCE_THRESHOLD,
    JOINT_LIMIT_MARGIN,
    OBJECT_SPEED_LIMIT,
    SPEED_WARMUP_STEPS,
    Contact,
    contact_conditions,
    fast_objects,
    near_joint_limits,
    outside_workspace,
    robot_contacts,
    too_close,
)
from vla_pruned_ros.monitor.gate import SafetyMonitor
from vla_pruned_ros.monitor.limits import SafetyLimits

# The physical categories a simulated robot can produce (the names SafetyEvent.msg carries).
COLLISION, PROXIMITY, SPEED = cat.COLLISION, cat.PROXIMITY, cat.SPEED
ACCELERATION, WORKSPACE, JOINT_LIMIT = cat.ACCELERATION, cat.WORKSPACE, cat.JOINT_LIMIT
# The detectors live in the monitor layer (shared with the ROS safety node); re-exported here.
__all__ = [
    "CONTACT_FORCE_THRESHOLD",
    "JOINT_LIMIT_MARGIN",
    "OBJECT_SPEED_LIMIT",
    "SPEED_WARMUP_STEPS",
    "Contact",
    "EpisodeSafety",
    "contact_conditions",
    "fast_objects",
    "near_joint_limits",
    "outside_workspace",
    "robot_contacts",
    "sim_limits",
    "too_close",
]

PHYSICAL_CATEGORIES: tuple[str, ...] = (
    COLLISION,
    PROXIMITY,
    SPEED,
    ACCELERATION,
    WORKSPACE,
    JOINT_LIMIT,
)


def sim_limits(**overrides: Any) -> SafetyLimits:
    """Limits for a simulated episode: the stream checks (stale command/camera, commanded speed)
    are off, since the simulator applies each action itself and steps only when it has one."""
    base = SafetyLimits(
        command_timeout_s=0.0,
        camera_timeout_s=0.0,
        policy_timeout_s=0.0,
        max_linear_speed=0.0,
        max_angular_speed=0.0,
    )  # contact force threshold and joint-limit margin: SafetyLimits' defaults (monitor.limits)
    return replace(base, **overrides)


class EpisodeSafety:
    """One task's violation bookkeeping: detector output goes through a `SafetyMonitor`, so an
    episode in the simulator is counted exactly as the ROS safety node would count it."""

    def __init__(self, limits: SafetyLimits | None = None) -> None:
        self.limits = limits or sim_limits()
        self.monitor = SafetyMonitor(self.limits)

    def start(self, episode_id: str, now: float) -> None:
        self.monitor.start_episode(episode_id, now)

    def contacts(self, contacts: Iterable[Contact], now: float) -> None:
        """All robot contacts of this control step (already filtered by `robot_contacts`)."""
        self.monitor.on_contacts(contacts, now)

    def object_speeds(self, speeds: Mapping[str, float], step: int, now: float) -> None:
        self.monitor.update(SPEED, fast_objects(speeds, step), now)

    def joints(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        lower: Sequence[float],
        upper: Sequence[float],
        now: float,
    ) -> None:
        self.monitor.on_joints(names, positions, lower, upper, now)

    def workspace(self, position: Sequence[float], now: float) -> None:
        self.monitor.on_position(position, now)

    def pop_events(self) -> list[dict[str, Any]]:
        """This step's new violations as plain dicts (JSON-able, ready for a ROS message)."""
        return [vars(e).copy() for e in self.monitor.pop_events()]

    @property
    def unsafe(self) -> bool:
        return self.monitor.episode.unsafe

    def counts(self) -> dict[str, int]:
        """Violations of this episode by category (categories with none left out)."""
        return {k: v for k, v in self.monitor.episode.counts.items() if v}
