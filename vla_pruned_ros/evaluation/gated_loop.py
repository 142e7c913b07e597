"""The safety gate inside an in-process closed-loop episode.

`vla-eval sim` drives the MuJoCo task with the policy's actions directly; on a robot every
command goes through the safety monitor first. `SimGate` puts the same ROS-free `SafetyMonitor`
between the two, fed what the simulation node publishes after each control step (the robot's
contacts over the step's physics substeps with their points and normals, the 36-beam range scan,
the pose), with the robot's limits and zones
from its `config/safety*.yaml`. So the gate's effect on collisions and success (issue 18: the
stop-and-hold gate let the policy drive into the same wall again) costs an episode's model time,
not a DDS graph.

Modes: "none" (no gate, the policy's actions as they are), "stop" (today's gate: any collision or
proximity stops, holds `stop_hold_s`, then releases) and "direction" (the same file with
`zones.direction_aware` on: motion toward an obstacle stays blocked, away passes, slowed before
it). The stream checks (stale command/camera, lost policy) are off: the loop is synchronous, the
simulator steps only when it has an action.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from vla_pruned_ros.monitor import SafetyLimits, SafetyMonitor
from vla_pruned_ros.monitor.detectors import robot_contact_geometry as _robot_geometry
from vla_pruned_ros.monitor.limits import TASK_SAFETY_CONFIG as SAFETY_CONFIG
from vla_pruned_ros.monitor.velocity import TWIST_FIELDS, action_to_velocity, velocity_to_action
from vla_pruned_ros.monitor.zones import Normal, Point, ZoneConfig, scan_angles
from vla_pruned_ros.params_file import read_ros_params
from vla_pruned_ros.paths import package_file

GATE_MODES = ("none", "stop", "direction")
SCAN_BEAMS = 36  # what the simulation node publishes (ros/sim_node.py)


def gate_config(task: str, mode: str, path: Path | None = None) -> tuple[SafetyLimits, ZoneConfig]:
    """The task's monitor limits and zones from its safety YAML, stream checks off, with
    `direction_aware` set by the mode."""
    if mode not in GATE_MODES[1:]:
        raise ValueError(f"gate mode must be one of {GATE_MODES[1:]}, not {mode!r}")
    params = read_ros_params(path or package_file(SAFETY_CONFIG[task]), "safety_monitor")
    limits = SafetyLimits.from_mapping(params.get("limits", {}))
    limits = replace(limits, command_timeout_s=0.0, camera_timeout_s=0.0, policy_timeout_s=0.0)
    zones = ZoneConfig.from_mapping(params.get("zones", {}))
    return limits, replace(zones, direction_aware=(mode == "direction"))


class SimGate:
    """One episode's gate: `filter` an action before the task steps, `observe` the task after."""

    def __init__(self, task, mode: str, path: Path | None = None) -> None:
        limits, zones = gate_config(task.name, mode, path)
        self.task = task
        self.monitor = SafetyMonitor(limits, now=task.sim_time, zones=zones)
        self.blocked = 0  # actions the gate changed (stopped, blocked or slowed)
        self.stopped = 0  # of those, stopped whole by a stop decision
        for name in task.action_names:
            if name not in TWIST_FIELDS:
                raise ValueError(f"no Twist field for action element {name!r}")
        self.observe()

    def filter(self, action: np.ndarray) -> np.ndarray:
        """What the gate lets through of one action at the current sim time."""
        now = self.task.sim_time
        linear, angular = action_to_velocity(self.task.action_names, action)
        self.monitor.on_command(linear, angular, now)
        decision = self.monitor.decide(now)
        self.monitor.record_output(decision.stop, now)
        if decision.stop:
            self.blocked += 1
            self.stopped += 1
            return np.zeros_like(action)
        linear, angular = self.monitor.clamp(linear, angular)
        out = np.array(
            velocity_to_action(self.task.action_names, linear, angular),
            dtype=np.asarray(action).dtype,
        )
        if not np.allclose(out, action):
            self.blocked += 1
        return out

    def observe(self) -> None:
        """Feed the gate what the simulation node would publish now."""
        task, now = self.task, self.task.sim_time
        contacts, points, normals = robot_contact_geometry(task)
        if hasattr(task, "ranges"):  # the mobile base has a scan; the pusher does not
            ranges = task.ranges(n=SCAN_BEAMS)
            angles = scan_angles(0.0, 2 * np.pi / SCAN_BEAMS, SCAN_BEAMS)
            self.monitor.on_ranges([float(r) for r in ranges], now, angles=angles)
        x, y = (float(v) for v in task.robot_xy())
        yaw = float(task.data.qpos[2]) if task.name == "nav" else 0.0
        self.monitor.on_pose(x, y, yaw)
        self.monitor.on_contacts(contacts, now, points=points, normals=normals)

    def stats(self) -> dict[str, int]:
        """Actions the gate changed or stopped, and the collisions it saw (both the task and
        the gate see the contacts of every physics substep)."""
        seen = self.monitor.episode.counts["collision"]
        return {"gate_changed": self.blocked, "gate_stopped": self.stopped, "gate_collisions": seen}


def robot_contact_geometry(
    task,
) -> tuple[list[tuple[str, str, float]], list[Point], list[Normal]]:
    """The robot's counted contacts of the last control step (every substep's, the named
    object excluded, as the task counts them), robot first, each with its world (x, y) point
    and (x, y) normal from the robot into the other body (`detectors.robot_contact_geometry`,
    the filter the ROS monitor applies to Contacts.msg)."""
    records = task.step_contacts
    contacts, points, normals = _robot_geometry(
        [c.pair for c in records],
        task.robot_bodies,
        task.allowed_contacts(),
        points=[(r.position[0], r.position[1]) for r in records],
        normals=[(r.normal[0], r.normal[1]) for r in records],
    )
    return contacts, points or [], normals or []
