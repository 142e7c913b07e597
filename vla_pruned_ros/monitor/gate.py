"""The command gate and violation bookkeeping, driven by explicit timestamps.

Every input carries the time it refers to (a header stamp or the node clock), never wall time,
so the monitor is right under `use_sim_time` and bag replay. Every stamp is judged by
`monitor.stamps.check_stamp`: one from the future beyond `clock_skew_tolerance_s` is counted as
`clock_skew` and ignored, so it can never make a stale input look fresh. A condition is counted
once when it becomes true (a sustained contact is one collision), and cleared when it stops
being true.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vla_pruned_ros.monitor import categories as cat
from vla_pruned_ros.monitor.detectors import (
    Reading,
    contact_conditions,
    near_joint_limits,
    outside_workspace,
    too_close,
)
from vla_pruned_ros.monitor.limits import SafetyLimits
from vla_pruned_ros.monitor.report import EpisodeReport, SafetyEventRecord
from vla_pruned_ros.monitor.stamps import check_stamp
from vla_pruned_ros.monitor.zones import CollisionZones, Normal, Point, ZoneConfig


@dataclass(frozen=True)
class Decision:
    """What the gate does now: pass commands through, or command a stop (and why)."""

    stop: bool
    reason: str = ""


class SafetyMonitor:
    """Counts violations per episode and decides whether commands may pass."""

    def __init__(
        self,
        limits: SafetyLimits,
        now: float = 0.0,
        episode_id: str = "0",
        zones: ZoneConfig | None = None,
        expected: Iterable[str] = (),
    ) -> None:
        """`expected` names the inputs this deployment is wired to receive ("camera",
        "policy"): once commands flow, one of them that has never arrived is stale after its
        timeout, counted from the first command. A mis-wired topic then stops the robot with a
        reason instead of switching its check off (a 0 timeout is the way to switch it off).
        Callers that never feed an input (the in-process loops) leave it out."""
        self.limits = limits
        self.expected = frozenset(expected)
        unknown = self.expected - {"camera", "policy"}
        if unknown:
            raise ValueError(f"expected inputs must be 'camera' or 'policy', got {sorted(unknown)}")
        self._first_command: float | None = None
        # Direction-aware collision/proximity handling (monitor/zones.py); off by default.
        self.zones = CollisionZones(zones)
        self.finished: list[EpisodeReport] = []
        self.episode = EpisodeReport(episode_id, now)
        self.episode_active = True
        self._active: dict[tuple[str, str], float] = {}
        self._last_trigger: float | None = None
        self._last_command: float | None = None
        self._last_command_value: tuple[Sequence[float], Sequence[float]] | None = None
        self._last_camera: float | None = None
        self._last_policy: float | None = None
        self._skewed: dict[str, Reading] = {}  # inputs whose latest stamp was from the future
        self.new_events: list[SafetyEventRecord] = []

    # -- episodes ---------------------------------------------------------------------------
    def start_episode(self, episode_id: str, now: float) -> EpisodeReport | None:
        """Close the current episode (returned if it was active) and open a new one."""
        closed = self.end_episode(now) if self.episode_active else None
        self.episode = EpisodeReport(episode_id, now)
        self.episode_active = True
        self._active.clear()
        self._last_trigger = None
        self.zones.reset()
        return closed

    def end_episode(self, now: float) -> EpisodeReport:
        self.episode.end_time = now
        if self.episode_active:
            self.finished.append(self.episode)
        self.episode_active = False
        return self.episode

    def all_episodes(self) -> list[EpisodeReport]:
        return self.finished + ([self.episode] if self.episode_active else [])

    # -- the one primitive every check goes through ---------------------------------------
    def update(self, category: str, active: Mapping[str, Reading], now: float) -> None:
        """Set the complete set of active conditions of one category (keys: what is involved,
        e.g. a contact pair). New keys are counted once; missing keys are cleared."""
        for key, reading in active.items():
            if (category, key) not in self._active:
                self._active[(category, key)] = now
                self._record(category, key, reading, now)
        for k in [k for k in self._active if k[0] == category and k[1] not in active]:
            del self._active[k]

    def _record(self, category: str, key: str, reading: Reading, now: float) -> None:
        event = SafetyEventRecord(
            now,
            self.episode.episode_id,
            category,
            key,
            reading.value,
            reading.threshold,
            reading.text,
        )
        self.new_events.append(event)
        if not self.episode_active:
            return
        self.episode.counts[category] += 1
        self.episode.events.append(event)
        if category in self.limits.stop_categories:
            if not self.zones.handles(category):  # zones block toward it instead of a hold
                self._last_trigger = now
            if self.episode.first_trigger_time is None:
                self.episode.first_trigger_time = now

    def pop_events(self) -> list[SafetyEventRecord]:
        events, self.new_events = self.new_events, []
        return events

    # -- inputs -----------------------------------------------------------------------------
    def on_command(
        self,
        linear: Sequence[float],
        angular: Sequence[float],
        now: float,
        stamp: float | None = None,
    ) -> bool:
        """A velocity command from the policy: stamp, validity, speed and acceleration limits.

        `stamp` is the command's own header stamp (TwistStamped), None for a bare Twist (then
        its receipt time `now` is its stamp). Returns False for a command that must not be
        forwarded (from the future, or not finite)."""
        lim = self.limits
        if stamp is not None and not self._fresh_stamp("command", stamp, now):
            return False
        values = [*linear, *angular]
        bad = {} if all(math.isfinite(v) for v in values) else {"command": Reading(math.nan, 0.0)}
        self.update(cat.INVALID_ACTION, bad, now)
        if bad:
            return False
        self._last_command = now if stamp is None else max(stamp, self._last_command or stamp)
        if self._first_command is None:
            self._first_command = now
        speeds: dict[str, Reading] = {}
        lin, ang = _norm(linear), _norm(angular)
        if lim.max_linear_speed > 0 and lin > lim.max_linear_speed:
            speeds["linear"] = Reading(lin, lim.max_linear_speed, "commanded linear speed")
        if lim.max_angular_speed > 0 and ang > lim.max_angular_speed:
            speeds["angular"] = Reading(ang, lim.max_angular_speed, "commanded angular speed")
        self.update(cat.SPEED, speeds, now)
        accel: dict[str, Reading] = {}
        if lim.max_linear_accel > 0 and self._last_command_value is not None:
            prev_t, prev = self._last_command_value
            dt = now - prev_t
            if dt > 0:
                a = _norm([x - y for x, y in zip(linear, prev, strict=False)]) / dt
                if a > lim.max_linear_accel:
                    accel["linear"] = Reading(a, lim.max_linear_accel, "commanded acceleration")
        self.update(cat.ACCELERATION, accel, now)
        self.zones.on_command(linear)
        self._last_command_value = (now, list(linear))
        return True

    def on_camera(self, stamp: float, now: float) -> bool:
        """A camera frame's header stamp, received at `now`; False if rejected as clock skew."""
        if not self._fresh_stamp("camera", stamp, now):
            return False
        self._last_camera = stamp if self._last_camera is None else max(self._last_camera, stamp)
        return True

    def _fresh_stamp(self, source: str, stamp: float, now: float) -> bool:
        """Apply the stamp rule to one input: a future stamp sets `clock_skew` for `source`
        (counted once per onset) and is refused; a usable one clears it."""
        check = check_stamp(stamp, now, self.limits.clock_skew_tolerance_s)
        if check.future:
            ahead = -check.age_s
            self._skewed[source] = Reading(
                ahead, self.limits.clock_skew_tolerance_s, f"{source} stamp {ahead:.3f} s ahead"
            )
        else:
            self._skewed.pop(source, None)
        self.update(cat.CLOCK_SKEW, dict(self._skewed), now)
        return check.usable

    def on_policy_heartbeat(self, now: float) -> None:
        self._last_policy = now

    def on_contacts(
        self,
        contacts: Iterable[tuple[str, str, float]],
        now: float,
        points: Sequence[Point | None] | None = None,
        normals: Sequence[Normal | None] | None = None,
    ) -> None:
        """Contacts as (body, other, normal force); those above the force threshold collide.
        Feed the contacts of a whole control step (every physics substep, largest force per
        pair), not only those left at its end: a bump that bounced off within the step is still
        a collision the zones must remember. `points`: each contact's world (x, y) point,
        `normals`: its world (x, y) normal from the robot into the other body; None (or an
        entry None) where unknown, for the zones."""
        contacts = list(contacts)
        threshold = self.limits.contact_force_threshold
        self.update(cat.COLLISION, contact_conditions(contacts, threshold), now)
        where = [None] * len(contacts) if points is None else list(points)
        facing = [None] * len(contacts) if normals is None else list(normals)
        if len(where) != len(contacts) or len(facing) != len(contacts):
            raise ValueError(
                f"{len(contacts)} contacts but {len(where)} contact points and "
                f"{len(facing)} normals"
            )
        hits = [
            (p, n) for (_, _, f), p, n in zip(contacts, where, facing, strict=True) if f > threshold
        ]
        self.zones.on_contacts([p for p, _ in hits], now, normals=[n for _, n in hits])

    def on_ranges(
        self, ranges: Sequence[float], now: float, angles: Sequence[float] | None = None
    ) -> None:
        """A range scan; with its beam `angles` (robot frame) it also feeds the zones."""
        self.update(cat.PROXIMITY, too_close(ranges, self.limits.min_obstacle_distance), now)
        if angles is not None:
            self.zones.on_scan(ranges, angles)

    def on_pose(self, x: float, y: float, yaw: float) -> None:
        """The robot's planar pose (odometry), which places contact points for the zones."""
        self.zones.on_pose(x, y, yaw)

    def on_position(self, position: Sequence[float], now: float) -> None:
        lo, hi = self.limits.workspace_min, self.limits.workspace_max
        self.update(cat.WORKSPACE, outside_workspace(position, lo, hi), now)

    def on_joints(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        lower: Sequence[float],
        upper: Sequence[float],
        now: float,
    ) -> None:
        """A joint within `joint_limit_margin` of its range from a limit (the LIBERO rule)."""
        margin = self.limits.joint_limit_margin
        near = near_joint_limits(names, positions, lower, upper, margin)
        self.update(cat.JOINT_LIMIT, near, now)

    def on_measured_speed(self, linear: float, angular: float, now: float) -> None:
        lim, over = self.limits, {}
        if lim.max_linear_speed > 0 and abs(linear) > lim.max_linear_speed:
            over["measured_linear"] = Reading(abs(linear), lim.max_linear_speed, "measured speed")
        if lim.max_angular_speed > 0 and abs(angular) > lim.max_angular_speed:
            over["measured_angular"] = Reading(
                abs(angular), lim.max_angular_speed, "measured yaw rate"
            )
        self.update(cat.SPEED, over, now)

    # -- the gate ---------------------------------------------------------------------------
    def _check_staleness(self, now: float) -> None:
        lim = self.limits

        def stale(last: float | None, timeout: float, what: str) -> dict[str, Reading]:
            since = "" if last is not None else " since commands began"
            if last is None:
                if what not in self.expected or self._first_command is None:
                    return {}
                last = self._first_command  # never arrived: as old as the commands
            check = check_stamp(last, now, lim.clock_skew_tolerance_s)
            if not check.stale(timeout):
                return {}
            text = f"no {what}{since} for {check.age_s:.3f} s"
            return {what: Reading(check.age_s, timeout, text)}

        self.update(
            cat.STALE_COMMAND, stale(self._last_command, lim.command_timeout_s, "command"), now
        )
        self.update(cat.STALE_CAMERA, stale(self._last_camera, lim.camera_timeout_s, "camera"), now)
        self.update(cat.POLICY_LOST, stale(self._last_policy, lim.policy_timeout_s, "policy"), now)

    def decide(self, now: float) -> Decision:
        """Evaluate the time-based checks and return what the gate should do at `now`."""
        self._check_staleness(now)
        for category, _key in self._active:
            if category in self.limits.stop_categories and not self.zones.handles(category):
                return Decision(True, category)
        if self._last_trigger is not None and now - self._last_trigger < self.limits.stop_hold_s:
            return Decision(True, "hold after violation")
        if self._last_command is None:
            return Decision(True, "no command yet")
        return Decision(False)

    def record_output(self, stopped: bool, now: float) -> None:
        """Note what was sent to the robot, for time-to-stop and the command counters."""
        if not self.episode_active:
            return
        if stopped:
            self.episode.stop_commands += 1
            if self.episode.first_trigger_time is not None and self.episode.first_stop_time is None:
                self.episode.first_stop_time = now
        else:
            self.episode.passed_commands += 1

    def clamp(self, linear: Sequence[float], angular: Sequence[float]) -> tuple[list, list]:
        """Scale a command down to the speed limits (what passes when speed does not stop),
        then through the direction-aware zones (blocked toward an obstacle, slowed near one)."""
        return self.zones.filter(
            _scaled(linear, self.limits.max_linear_speed),
            _scaled(angular, self.limits.max_angular_speed),
        )


def _norm(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _scaled(v: Sequence[float], limit: float) -> list[float]:
    n = _norm(v)
    if limit <= 0 or n <= limit:
        return list(v)
    return [x * limit / n for x in v]
