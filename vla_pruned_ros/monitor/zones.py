"""Direction-aware collision zones: after a contact or a close obstacle, block only the motion
toward it, and slow down before it.

Learnt from Nav2's collision monitor (not copied): sources turn sensor data into obstacle points,
and zones around the robot act on the points a command would drive into. Here the zones are a
corridor of the robot's width along the commanded direction, cut at two ranges from the robot
centre: inside `stop_distance` the linear command is blocked, between `stop_distance` and
`slowdown_distance` it is scaled from 1 down to `slowdown_ratio`. Points beside or behind the
motion do not matter, so backing away from a wall (or sliding along it) passes while driving
into it again does not. This is what a plain stop-and-hold gate lacks: it releases after
`stop_hold_s` and the policy drives into the same wall again (issue 18).

Sources (one class each, like Nav2's):
- `ContactSource`: robot contact points, remembered in the world frame after the contact ends
  (the obstacle has not moved), forgotten after `contact_memory_s` or at an episode start. A
  contact with a normal (from the robot into the obstacle: from the simulator in process, from
  Contacts.msg `normal` on the graph) is remembered as a patch of the obstacle's surface:
  within `contact_patch_radius` of the point along the surface, the command's component into
  the normal is limited so the footprint closes the gap
  to `stop_distance` no faster than over `approach_time_s` (Nav2's "approach" zone, for a
  contact), and inside it to `contact_creep_speed` (0 for the mobile base; the pusher may press
  on gently, so it keeps the contact it has and slides round a corner instead of stalling);
  motion along the surface and away passes. A point alone
  blocks only a corridor as wide as the robot, so a policy that came back 2 cm beside its first
  touch, or crossed the whole slowdown band within one control period, hit the same obstacle
  again (research/gate_collisions.py). A contact without a normal is a point in the corridor; one
  without geometry is placed where the robot was moving when it began; with no known motion
  either, it blocks all linear motion while it lasts (the safe side).
- `ScanSource`: a planar range scan (ranges + angles in the robot frame), replaced per scan.

Frames: commands and scans are in the robot frame (x forward); contact points in the world
frame; the pose (x, y, yaw) links the two. A robot that gives no pose stays at the origin with
yaw 0, which makes both frames one (the tabletop pusher moves in the table frame). Angular
velocity always passes: the footprints here are round, so turning in place sweeps nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from vla_pruned_ros.monitor import categories as cat

Point = tuple[float, float]

# The violation categories whose gate response the zones replace when direction-aware.
ZONE_CATEGORIES: tuple[str, ...] = (cat.COLLISION, cat.PROXIMITY)
_MERGE_DISTANCE = 0.01  # m: contact points closer than this to a remembered one are the same
_MAX_CONTACT_POINTS = 64


@dataclass(frozen=True)
class ZoneConfig:
    """The zones of one robot (parameters `zones.*` of the safety monitor). Distances are from
    the robot centre, as a range scan from the centre measures them."""

    direction_aware: bool = False  # off: collisions and proximity stop and hold, as before
    footprint_radius: float = 0.15  # m: half the corridor width a command sweeps
    stop_distance: float = 0.2  # m: obstacle points nearer than this block motion toward them
    slowdown_distance: float = 0.45  # m: from here down to stop_distance, commands scale down
    slowdown_ratio: float = 0.3  # the scale at stop_distance (1.0 at slowdown_distance)
    contact_memory_s: float = 30.0  # s: contact points remembered after the contact; 0: episode
    # A contact with a normal blocks approach within this distance of its point, along the
    # surface (the obstacle's extent is unknown: about its half-width for a box).
    contact_patch_radius: float = 0.3
    # Toward a remembered surface a command may close the gap to stop_distance in no less than
    # this (s): v_into <= gap / approach_time_s, a time-to-collision limit that holds at any speed.
    approach_time_s: float = 0.2
    # Into a touched surface inside stop_distance, at most this (m/s; 0: nothing). A pusher that
    # may press on gently keeps the contact it has (one collision, not a release and a re-touch)
    # and slides round a corner the way the policy expects the physics to take it; with 0 the
    # policy pushed on into the blocked direction and the episode stalled there
    # (research/gate_collisions.py). A base that must not touch keeps 0.
    contact_creep_speed: float = 0.0
    # A holonomic robot (the tabletop pusher) keeps the part of a blocked command that slides
    # past the obstacle; a differential-drive base cannot move sideways, so it stops instead.
    holonomic: bool = False

    def __post_init__(self) -> None:
        if self.footprint_radius <= 0:
            raise ValueError(f"zones.footprint_radius must be > 0, got {self.footprint_radius}")
        if self.stop_distance < self.footprint_radius:
            raise ValueError(
                f"zones.stop_distance ({self.stop_distance}) must be >= footprint_radius "
                f"({self.footprint_radius}): a contact point lies on the footprint"
            )
        if self.slowdown_distance < self.stop_distance:
            raise ValueError(
                f"zones.slowdown_distance ({self.slowdown_distance}) must be >= stop_distance "
                f"({self.stop_distance})"
            )
        if not 0.0 <= self.slowdown_ratio <= 1.0:
            raise ValueError(f"zones.slowdown_ratio must be in [0, 1], got {self.slowdown_ratio}")
        if self.contact_patch_radius < 0:
            raise ValueError(
                f"zones.contact_patch_radius must be >= 0, got {self.contact_patch_radius}"
            )
        if self.contact_creep_speed < 0:
            raise ValueError(
                f"zones.contact_creep_speed must be >= 0, got {self.contact_creep_speed}"
            )
        if self.approach_time_s <= 0:
            raise ValueError(f"zones.approach_time_s must be > 0, got {self.approach_time_s}")
        if self.contact_memory_s < 0:
            raise ValueError(f"zones.contact_memory_s must be >= 0, got {self.contact_memory_s}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ZoneConfig:
        """Build from a parameter dict; an unknown key is an error (a typo would leave a zone
        at its default on a real robot)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown zone parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class Pose:
    """The robot on the plane, world frame."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0

    def to_world(self, p: Point) -> Point:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return (self.x + c * p[0] - s * p[1], self.y + s * p[0] + c * p[1])

    def to_robot(self, p: Point) -> Point:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = p[0] - self.x, p[1] - self.y
        return (c * dx + s * dy, -s * dx + c * dy)


Normal = tuple[float, float]  # planar unit vector from the robot into the obstacle


class ContactSource:
    """Robot contact points in the world frame, kept after the contact ends, each with the
    surface normal where the contact gave one."""

    def __init__(self, config: ZoneConfig) -> None:
        self.config = config
        # (world point, world normal or None, last time in contact)
        self._points: list[tuple[Point, Normal | None, float]] = []
        self.blind = False  # a contact is active whose direction is unknown

    def reset(self) -> None:
        self._points.clear()
        self.blind = False

    def update(
        self,
        points: Sequence[Point | None],
        pose: Pose,
        motion: Point | None,
        now: float,
        normals: Sequence[Normal | None] | None = None,
    ) -> None:
        """The colliding contacts of this instant (or of a control step's substeps): a world
        point each, or None where the message had no geometry (then placed on the footprint
        along `motion`, the robot-frame direction it was moving in; unknown motion makes the
        source blind while it lasts), and each one's world normal from the robot into the
        obstacle (None: not known)."""
        self.blind = False
        normals = [None] * len(points) if normals is None else list(normals)
        if len(normals) != len(points):
            raise ValueError(f"{len(points)} contact points but {len(normals)} normals")
        for p, n in zip(points, normals, strict=True):
            if p is None:
                if motion is None:
                    self.blind = True
                    continue
                m = math.hypot(*motion)
                r = self.config.footprint_radius
                p = pose.to_world((motion[0] / m * r, motion[1] / m * r))
            self._remember(p, _unit(n), now)
        memory = self.config.contact_memory_s
        if memory > 0:
            self._points = [(p, n, t) for p, n, t in self._points if now - t <= memory]

    def _remember(self, p: Point, normal: Normal | None, now: float) -> None:
        for i, (q, old, _) in enumerate(self._points):
            if math.dist(p, q) < _MERGE_DISTANCE:
                self._points[i] = (q, normal or old, now)
                return
        self._points.append((p, normal, now))
        del self._points[:-_MAX_CONTACT_POINTS]

    def points(self, pose: Pose) -> list[Point]:
        """The remembered points without a normal, in the robot frame (corridor obstacles)."""
        return [pose.to_robot(p) for p, n, _ in self._points if n is None]

    def surfaces(self, pose: Pose) -> list[tuple[Point, Normal]]:
        """The remembered contacts with a normal, both in the robot frame."""
        c, s = math.cos(pose.yaw), math.sin(pose.yaw)
        return [
            (pose.to_robot(p), (c * n[0] + s * n[1], -s * n[0] + c * n[1]))
            for p, n, _ in self._points
            if n is not None
        ]


def _unit(n: Sequence[float] | None) -> Normal | None:
    """A planar unit normal, or None for a missing or degenerate (vertical) one."""
    if n is None:
        return None
    length = math.hypot(n[0], n[1])
    return (n[0] / length, n[1] / length) if length > 1e-6 else None


class ScanSource:
    """Obstacle points of the latest planar scan, robot frame (only those near enough to act)."""

    def __init__(self, config: ZoneConfig) -> None:
        self.config = config
        self._points: list[Point] = []

    def reset(self) -> None:
        self._points = []

    def update(self, ranges: Sequence[float], angles: Sequence[float]) -> None:
        if len(ranges) != len(angles):
            raise ValueError(f"{len(ranges)} ranges but {len(angles)} angles")
        near = self.config.slowdown_distance
        self._points = [
            (r * math.cos(a), r * math.sin(a))
            for r, a in zip(ranges, angles, strict=True)
            if math.isfinite(r) and 0.0 < r <= near
        ]

    def points(self) -> list[Point]:
        return list(self._points)


def scan_angles(angle_min: float, angle_increment: float, count: int) -> list[float]:
    """The beam angles of a LaserScan (what the message gives as min + increment)."""
    return [angle_min + i * angle_increment for i in range(count)]


def speed_scale(
    direction: Point, points: Sequence[Point], config: ZoneConfig
) -> tuple[float, float | None]:
    """How much of a linear command along `direction` (robot frame) may pass, and the range of
    the nearest point in its corridor (None: none). 0 inside the stop zone, a linear ramp from 1
    down to `slowdown_ratio` across the slowdown zone, 1 beyond it or with the corridor clear."""
    n = math.hypot(*direction)
    if n == 0.0:
        return 1.0, None
    ux, uy = direction[0] / n, direction[1] / n
    nearest = None
    for px, py in points:
        along = px * ux + py * uy
        lateral = abs(px * uy - py * ux)
        if along > 1e-9 and lateral < config.footprint_radius:
            r = math.hypot(px, py)
            nearest = r if nearest is None else min(nearest, r)
    if nearest is None or nearest >= config.slowdown_distance:
        return 1.0, nearest
    if nearest < config.stop_distance:
        return 0.0, nearest
    span = config.slowdown_distance - config.stop_distance
    t = 1.0 if span == 0 else (nearest - config.stop_distance) / span
    return config.slowdown_ratio + (1.0 - config.slowdown_ratio) * t, nearest


def slide(direction: Point, points: Sequence[Point], config: ZoneConfig) -> Point:
    """A holonomic command with its component toward each stop-zone point in its way removed
    (what is left moves along the obstacle, never into it); (0, 0) if nothing is left."""
    vx, vy = direction
    for _ in range(3):  # a corner needs a second pass; more points than that leave nothing
        if speed_scale((vx, vy), points, config)[0] > 0.0:
            return (vx, vy)
        for px, py in points:
            r = math.hypot(px, py)
            toward = (vx * px + vy * py) / r if r > 0 else 0.0
            if r < config.stop_distance and toward > 0.0:
                vx, vy = vx - toward * px / r, vy - toward * py / r
        if math.hypot(vx, vy) < 1e-9:
            return (0.0, 0.0)
    return (vx, vy) if speed_scale((vx, vy), points, config)[0] > 0.0 else (0.0, 0.0)


def approach_limits(
    surfaces: Sequence[tuple[Point, Normal]], config: ZoneConfig
) -> list[tuple[Normal, float]]:
    """For each remembered surface the robot is in front of (its centre within
    `contact_patch_radius` of the point along the surface, not behind it): the normal and the
    largest speed into it that passes, the gap to `stop_distance` over `approach_time_s`
    (`contact_creep_speed` inside it, 0 by default). Robot frame, robot at the origin."""
    out = []
    for (px, py), (nx, ny) in surfaces:
        ahead = px * nx + py * ny  # the centre's distance to the surface along the normal
        lateral = abs(px * ny - py * nx)
        if ahead < 0.0 or lateral > config.contact_patch_radius:
            continue
        gap = max(0.0, ahead - config.stop_distance)
        out.append(((nx, ny), max(config.contact_creep_speed, gap / config.approach_time_s)))
    return out


def limit_approach(
    direction: Point, limits: Sequence[tuple[Normal, float]], holonomic: bool
) -> Point:
    """The command with its speed into each surface cut to that surface's limit. A holonomic
    robot keeps the rest (it moves along the surface); one that cannot move sideways is scaled
    down whole until every limit holds. Motion away from a surface is never changed."""
    vx, vy = direction
    if holonomic:
        for _ in range(3):  # a corner: cutting one component can push into another surface
            for (nx, ny), top in limits:
                excess = vx * nx + vy * ny - top
                if excess > 1e-12:
                    vx, vy = vx - excess * nx, vy - excess * ny
    scale = 1.0
    for (nx, ny), top in limits:
        into = vx * nx + vy * ny
        if into > top + 1e-12:
            scale = min(scale, top / into)
    return (vx * scale, vy * scale)


class CollisionZones:
    """The direction-aware part of the gate: sources in, a filtered command out."""

    def __init__(self, config: ZoneConfig | None = None) -> None:
        self.config = config or ZoneConfig()
        self.contacts = ContactSource(self.config)
        self.scan = ScanSource(self.config)
        self.pose = Pose()
        self._motion: Point | None = None  # robot-frame direction of the last moving command
        self.reason = ""  # why the last filtered command was changed ("" if it passed whole)

    @property
    def enabled(self) -> bool:
        return self.config.direction_aware

    def handles(self, category: str) -> bool:
        """Whether the zones, not a stop-and-hold, answer this category's violations."""
        return self.enabled and category in ZONE_CATEGORIES

    def reset(self) -> None:
        """A new episode: nothing remembered (a new scene)."""
        self.contacts.reset()
        self.scan.reset()
        self._motion = None

    # -- inputs -----------------------------------------------------------------------------
    def on_pose(self, x: float, y: float, yaw: float) -> None:
        self.pose = Pose(x, y, yaw)

    def on_command(self, linear: Sequence[float]) -> None:
        """Remember the direction the robot is being driven in (where an undirected contact
        is placed)."""
        xy = (float(linear[0]), float(linear[1]) if len(linear) > 1 else 0.0)
        if math.hypot(*xy) > 1e-6:
            self._motion = xy

    def on_contacts(
        self,
        points: Sequence[Point | None],
        now: float,
        normals: Sequence[Normal | None] | None = None,
    ) -> None:
        self.contacts.update(points, self.pose, self._motion, now, normals)

    def on_scan(self, ranges: Sequence[float], angles: Sequence[float]) -> None:
        self.scan.update(ranges, angles)

    # -- output -----------------------------------------------------------------------------
    def filter(self, linear: Sequence[float], angular: Sequence[float]) -> tuple[list, list]:
        """The command with its linear part scaled for the obstacles ahead (unchanged when the
        zones are off). Only the planar part (x, y) is judged; z and angular pass."""
        linear, angular = list(linear), list(angular)
        self.reason = ""
        if not self.enabled:
            return linear, angular
        direction = (linear[0], linear[1] if len(linear) > 1 else 0.0)
        if math.hypot(*direction) == 0.0:
            return linear, angular
        if self.contacts.blind:
            self.reason = "contact of unknown direction: linear motion blocked"
            return [0.0] * len(linear), angular
        limits = approach_limits(self.contacts.surfaces(self.pose), self.config)
        if limits:
            held = limit_approach(direction, limits, self.config.holonomic)
            if held != direction:
                self.reason = "approaching a touched surface: speed into it limited"
                linear = [*held, *linear[2:]]
                direction = held
                if math.hypot(*direction) == 0.0:
                    return linear, angular
        points = self.contacts.points(self.pose) + self.scan.points()
        if self.config.holonomic:
            slid = slide(direction, points, self.config)
            if slid != direction:
                self.reason = "sliding past an obstacle"
                linear = [*slid, *linear[2:]]
                direction = slid
        scale, nearest = speed_scale(direction, points, self.config)
        if scale < 1.0:
            what = "blocked" if scale == 0.0 else f"slowed to {scale:.2f}"
            self.reason = f"obstacle {nearest:.2f} m ahead: {what}"
            linear = [v * scale if i < 2 else v for i, v in enumerate(linear)]
        return linear, angular
