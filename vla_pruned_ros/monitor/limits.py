"""Per-robot safety thresholds, read from the same YAML the ROS node takes as parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vla_pruned_ros.monitor.categories import CATEGORIES


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
    contact_force_threshold: float = 1e-3
    joint_limit_margin: float = 0.05
    workspace_min: tuple[float, ...] = ()
    workspace_max: tuple[float, ...] = ()
    stop_hold_s: float = 0.5
    stop_categories: tuple[str, ...] = (
        "collision",
        "proximity",
        "workspace",
        "stale_command",
        "stale_camera",
        "policy_lost",
        "invalid_action",
    )

    def __post_init__(self) -> None:
        if self.control_rate_hz <= 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
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
