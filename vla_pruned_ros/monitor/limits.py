"""Per-robot safety thresholds, read from the same YAML the ROS node takes as parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vla_pruned_ros.monitor.categories import CATEGORIES, STOP_CATEGORIES
from vla_pruned_ros.monitor.stamps import CLOCK_SKEW_TOLERANCE_S

# Detector thresholds after the GLUESTICK authors' monitors (the one place they are written; the
# detectors, the simulator and the YAMLs take these defaults).
CONTACT_FORCE_THRESHOLD = 1e-3  # N, normal force: a touch at or below it is not a collision
JOINT_LIMIT_MARGIN = 0.05  # share of a joint's range from either limit

TASK_SAFETY_CONFIG: dict[str, str] = {
    "nav": "config/safety_monitor_nav.yaml",
    "manip": "config/safety_monitor_manip.yaml",
}
"""Each task's safety YAML (package-relative): the limits the gate applies in simulation,
bag replay and on the robot's graph."""

RANGES: dict[str, tuple[float, float]] = {
    "control_rate_hz": (0.1, 1000.0),
    "command_timeout_s": (0.0, 3600.0),
    "camera_timeout_s": (0.0, 3600.0),
    "policy_timeout_s": (0.0, 3600.0),
    "max_linear_speed": (0.0, 100.0),
    "max_angular_speed": (0.0, 100.0),
    "max_linear_accel": (0.0, 1000.0),
    "min_obstacle_distance": (0.0, 100.0),
    "contact_force_threshold": (0.0, 1e6),
    "joint_limit_margin": (0.0, 0.5),
    "stop_hold_s": (0.0, 3600.0),
    "clock_skew_tolerance_s": (0.0, 10.0),
}
"""Allowed [min, max] of each numeric limit: checked here and given to ROS as parameter ranges
(so `ros2 param describe` shows them and `ros2 param set` outside them is refused)."""


@dataclass(frozen=True)
class SafetyLimits:
    """Thresholds of one robot. A limit of 0 (or an empty workspace) disables that check."""

    control_rate_hz: float = 10.0
    command_timeout_s: float = 0.5
    camera_timeout_s: float = 0.5
    policy_timeout_s: float = 1.0
    max_linear_speed: float = 1.0
    max_angular_speed: float = 2.0
    max_linear_accel: float = 0.0
    min_obstacle_distance: float = 0.0
    contact_force_threshold: float = CONTACT_FORCE_THRESHOLD
    joint_limit_margin: float = JOINT_LIMIT_MARGIN
    workspace_min: tuple[float, ...] = ()
    workspace_max: tuple[float, ...] = ()
    stop_hold_s: float = 0.5
    # A stamp (camera frame, stamped command) this far ahead of the monitor's clock is clock skew:
    # rejected and counted, never fresh (monitor/stamps.py). Under sim time allow one sim step.
    clock_skew_tolerance_s: float = CLOCK_SKEW_TOLERANCE_S
    stop_categories: tuple[str, ...] = STOP_CATEGORIES

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
        if len(self.workspace_min) != len(self.workspace_max):
            raise ValueError("workspace_min and workspace_max must have the same length")
        if any(lo > hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise ValueError("workspace_min must not exceed workspace_max")
        unknown = set(self.stop_categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown stop_categories {sorted(unknown)}; known: {CATEGORIES}")

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SafetyLimits:
        """Build from a parameter dict; an unknown key is an error, since a typo would silently
        leave a limit at its default on a real robot."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown safety limit(s) {unknown}; known: {sorted(known)}")
        kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
        return cls(**kwargs)
