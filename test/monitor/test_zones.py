"""Direction-aware collision zones (monitor/zones.py) and their hook in the gate, on explicit
timelines: blocked toward an obstacle, free away from it, slowed before it, and today's
stop-and-hold when the switch is off."""

from __future__ import annotations

import math

import pytest

from vla_pruned_ros.monitor import SafetyLimits, SafetyMonitor
from vla_pruned_ros.monitor.zones import CollisionZones, ZoneConfig, scan_angles, speed_scale

LIMITS = SafetyLimits(
    command_timeout_s=0.0, camera_timeout_s=0.0, policy_timeout_s=0.0, stop_hold_s=0.5
)
ZONES = ZoneConfig(
    direction_aware=True,
    footprint_radius=0.15,
    stop_distance=0.2,
    slowdown_distance=0.45,
    slowdown_ratio=0.3,
)
WALL = ("base", "wall_e", 5.0)
FORWARD, BACK = [0.4, 0.0, 0.0], [-0.4, 0.0, 0.0]
NO_TURN = [0.0, 0.0, 0.0]


def gated(monitor: SafetyMonitor, linear: list[float], now: float) -> list[float]:
    """What the gate lets through for one command at `now` (zero when it stops)."""
    monitor.on_command(linear, NO_TURN, now)
    if monitor.decide(now).stop:
        return [0.0, 0.0, 0.0]
    return monitor.clamp(linear, NO_TURN)[0]


def bump_east_wall(monitor: SafetyMonitor) -> None:
    """Drive east, touch a wall 0.15 m ahead (its contact point), then leave contact."""
    monitor.on_pose(0.0, 0.0, 0.0)
    assert gated(monitor, FORWARD, 0.0) == FORWARD
    monitor.on_contacts([WALL], 0.1, points=[(0.15, 0.0)])
    monitor.on_contacts([], 0.2)


def test_after_a_contact_motion_toward_it_stays_blocked_and_away_passes() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    bump_east_wall(monitor)
    for t in (0.3, 1.0, 3.0):  # well past stop_hold_s: the old gate released at 0.6 s
        assert gated(monitor, FORWARD, t)[0] == 0.0, f"drove into the wall again at {t} s"
        assert gated(monitor, BACK, t) == BACK, "backing away must pass whole"
    assert monitor.episode.counts["collision"] == 1


def test_off_switch_keeps_todays_stop_and_hold() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZoneConfig(direction_aware=False))
    monitor.on_pose(0.0, 0.0, 0.0)
    gated(monitor, FORWARD, 0.0)
    monitor.on_contacts([WALL], 0.1, points=[(0.15, 0.0)])
    assert monitor.decide(0.1).stop and monitor.decide(0.1).reason == "collision"
    monitor.on_contacts([], 0.2)
    assert gated(monitor, BACK, 0.3) == [0.0, 0.0, 0.0], "held: even backing away is stopped"
    assert gated(monitor, FORWARD, 0.7) == FORWARD, "after the hold, forward passes as before"
    assert SafetyMonitor(LIMITS).zones.enabled is False, "direction-aware is opt-in"


def test_while_touching_only_the_toward_motion_is_blocked() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    monitor.on_pose(0.0, 0.0, 0.0)
    gated(monitor, FORWARD, 0.0)
    monitor.on_contacts([WALL], 0.1, points=[(0.15, 0.0)])
    assert not monitor.decide(0.1).stop
    assert gated(monitor, FORWARD, 0.1)[0] == 0.0
    assert gated(monitor, BACK, 0.1) == BACK
    assert gated(monitor, [0.0, 0.3, 0.0], 0.1) == [0.0, 0.3, 0.0], "sliding along the wall"
    assert gated(monitor, [0.3, 0.3, 0.0], 0.1)[:2] == [0.0, 0.0], "diagonal into it"


def test_a_turned_robot_sees_the_remembered_contact_in_its_own_frame() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    bump_east_wall(monitor)
    monitor.on_pose(0.0, 0.0, math.pi)  # turned round: the wall is now behind
    assert gated(monitor, FORWARD, 1.0) == FORWARD
    assert gated(monitor, BACK, 1.0)[0] == 0.0


def test_a_contact_without_geometry_is_placed_along_the_motion() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    monitor.on_pose(0.0, 0.0, 0.0)
    gated(monitor, BACK, 0.0)  # reversing into something behind
    monitor.on_contacts([WALL], 0.1)  # no points: the Contacts message had none
    monitor.on_contacts([], 0.2)
    assert gated(monitor, BACK, 1.0)[0] == 0.0
    assert gated(monitor, FORWARD, 1.0) == FORWARD


def test_a_contact_of_unknown_direction_blocks_all_linear_motion_while_it_lasts() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    monitor.on_contacts([WALL], 0.1)  # no command yet: no motion to place it by
    monitor.on_command(BACK, [0.0, 0.0, 0.5], 0.1)
    linear, angular = monitor.clamp(BACK, [0.0, 0.0, 0.5])
    assert linear == [0.0, 0.0, 0.0] and angular == [0.0, 0.0, 0.5]
    monitor.on_contacts([], 0.2)
    assert gated(monitor, BACK, 0.3) == BACK


def test_scan_slowdown_scales_down_as_the_robot_approaches_then_stops() -> None:
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    angles = scan_angles(0.0, 2 * math.pi / 36, 36)
    speeds = []
    for i, ahead in enumerate((1.0, 0.44, 0.35, 0.25, 0.21, 0.19)):
        ranges = [ahead] + [5.0] * 35  # one obstacle dead ahead
        monitor.on_ranges(ranges, i * 0.1, angles=angles)
        speeds.append(gated(monitor, FORWARD, i * 0.1)[0])
        assert gated(monitor, BACK, i * 0.1) == BACK, "the obstacle is ahead, not behind"
    assert speeds[0] == FORWARD[0], "clear beyond slowdown_distance"
    assert all(a > b for a, b in zip(speeds[:-1], speeds[1:], strict=True)), speeds
    assert speeds[-2] >= ZONES.slowdown_ratio * FORWARD[0] - 1e-9
    assert speeds[-1] == 0.0, "inside stop_distance"


def test_points_beside_or_behind_the_motion_do_not_slow_it() -> None:
    assert speed_scale((1.0, 0.0), [(0.0, 0.18), (-0.18, 0.0)], ZONES) == (1.0, None)
    assert speed_scale((1.0, 0.0), [(0.15, 0.1)], ZONES)[0] == 0.0, "inside the corridor"
    assert speed_scale((1.0, 0.0), [(0.18, 0.16)], ZONES)[0] == 1.0, "outside the corridor"
    scale, nearest = speed_scale((0.0, 0.0), [(0.16, 0.0)], ZONES)
    assert scale == 1.0 and nearest is None, "no motion: nothing to scale"


def test_contact_memory_ends_after_its_time_and_at_an_episode_start() -> None:
    zones = ZoneConfig(**{**vars(ZONES), "contact_memory_s": 2.0})
    monitor = SafetyMonitor(LIMITS, zones=zones)
    bump_east_wall(monitor)
    monitor.on_contacts([], 1.5)
    assert gated(monitor, FORWARD, 1.5)[0] == 0.0
    monitor.on_contacts([], 2.5)
    assert gated(monitor, FORWARD, 2.5) == FORWARD
    monitor = SafetyMonitor(LIMITS, zones=ZONES)
    bump_east_wall(monitor)
    monitor.start_episode("next", 0.3)
    assert gated(monitor, FORWARD, 0.4) == FORWARD, "a new scene: nothing remembered"


def test_zones_off_filter_returns_the_command_unchanged() -> None:
    zones = CollisionZones(ZoneConfig())
    zones.on_contacts([(0.15, 0.0)], 0.0)
    zones.on_scan([0.16], [0.0])
    assert zones.filter(FORWARD, NO_TURN) == (FORWARD, NO_TURN)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"stop_distance": 0.1}, "stop_distance"),
        ({"slowdown_distance": 0.18}, "slowdown_distance"),
        ({"slowdown_ratio": 1.5}, "slowdown_ratio"),
        ({"footprint_radius": 0.0}, "footprint_radius"),
        ({"contact_memory_s": -1.0}, "contact_memory_s"),
        ({"stop_distnce": 0.3}, "unknown zone parameter"),
    ],
)
def test_bad_zone_parameters_are_refused_by_name(values: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ZoneConfig.from_mapping(values)


def test_scan_and_angles_must_match() -> None:
    with pytest.raises(ValueError, match="2 ranges but 1 angles"):
        CollisionZones(ZONES).on_scan([1.0, 1.0], [0.0])


def test_a_holonomic_robot_slides_past_instead_of_stopping() -> None:
    zones = ZoneConfig(**{**vars(ZONES), "holonomic": True})
    monitor = SafetyMonitor(LIMITS, zones=zones)
    bump_east_wall(monitor)
    linear = gated(monitor, [0.3, 0.3, 0.0], 1.0)
    assert linear[0] == pytest.approx(0.0, abs=1e-12) and linear[1] == pytest.approx(0.3)
    assert gated(monitor, FORWARD, 1.0)[:2] == [0.0, 0.0], "straight at it: nothing is left"
    assert gated(monitor, BACK, 1.0) == BACK


PUSHER = ZoneConfig(
    direction_aware=True,
    footprint_radius=0.025,
    stop_distance=0.035,
    slowdown_distance=0.06,
    slowdown_ratio=0.5,
    holonomic=True,
    contact_patch_radius=0.05,
    approach_time_s=0.2,
)
BLOCK = ("pusher", "block_green", 3.0)


def touched(normal: tuple[float, float] | None) -> SafetyMonitor:
    """The pusher at the origin has touched a block at (0.025, 0), given its normal or not."""
    monitor = SafetyMonitor(LIMITS, zones=PUSHER)
    gated(monitor, [0.2, 0.0, 0.0], 0.0)
    normals = None if normal is None else [normal]
    monitor.on_contacts([BLOCK], 0.1, points=[(0.025, 0.0)], normals=normals)
    monitor.on_contacts([], 0.2)
    return monitor


def test_a_touched_surface_blocks_motion_into_its_normal_and_passes_away_and_along() -> None:
    monitor = touched((1.0, 0.0))
    assert gated(monitor, [0.2, 0.0, 0.0], 0.3)[:2] == [0.0, 0.0]
    assert gated(monitor, [-0.2, 0.0, 0.0], 0.3) == [-0.2, 0.0, 0.0], "away passes whole"
    assert gated(monitor, [0.0, 0.2, 0.0], 0.3) == [0.0, 0.2, 0.0], "along passes whole"
    diagonal = gated(monitor, [0.2, 0.2, 0.0], 0.3)
    assert diagonal[0] == pytest.approx(0.0, abs=1e-12) and diagonal[1] == pytest.approx(0.2)


def test_a_surface_blocks_beside_the_first_touch_where_a_point_does_not() -> None:
    """3 cm along the block's face from the first touch: a remembered point is outside the
    corridor (footprint 2.5 cm) and the pusher hit the block again; the surface still holds."""
    for normal, blocked in (((1.0, 0.0), True), (None, False)):
        monitor = touched(normal)
        monitor.on_pose(0.0, 0.03, 0.0)
        out = gated(monitor, [0.2, 0.0, 0.0], 0.3)
        assert (out[0] == 0.0) == blocked, (normal, out)


def test_approach_to_a_surface_is_limited_by_time_to_collision() -> None:
    """6 cm from the surface, stop at 3.5 cm, approach over 0.2 s: at most 0.125 m/s into it,
    at any commanded speed (a point's slowdown band is crossed within one step at 0.4 m/s)."""
    monitor = touched((1.0, 0.0))
    monitor.on_pose(-0.035, 0.0, 0.0)  # the surface is 0.025 + 0.035 = 0.06 m ahead
    assert gated(monitor, [0.4, 0.0, 0.0], 0.3)[0] == pytest.approx(0.125)
    assert gated(monitor, [0.1, 0.0, 0.0], 0.3)[0] == pytest.approx(0.1), "slow enough passes"


def test_a_surface_behind_the_robot_or_beyond_its_patch_does_not_block() -> None:
    monitor = touched((1.0, 0.0))
    monitor.on_pose(0.05, 0.0, 0.0)  # went round: the surface is behind the centre
    assert gated(monitor, [0.2, 0.0, 0.0], 0.3) == [0.2, 0.0, 0.0]
    monitor.on_pose(0.0, 0.08, 0.0)  # 8 cm along the face: past the 5 cm patch
    assert gated(monitor, [0.2, 0.0, 0.0], 0.3) == [0.2, 0.0, 0.0]


def test_normals_must_match_the_contacts() -> None:
    with pytest.raises(ValueError, match="1 contacts but 1 contact points and 2 normals"):
        SafetyMonitor(LIMITS, zones=PUSHER).on_contacts(
            [BLOCK], 0.0, points=[(0.0, 0.0)], normals=[(1.0, 0.0), (0.0, 1.0)]
        )


def test_a_creep_speed_lets_a_pusher_press_on_gently_and_never_faster() -> None:
    """`contact_creep_speed`: at a touched surface the pusher may keep pressing at that speed
    (keeping its one contact instead of releasing and re-touching), the along part whole."""
    monitor = SafetyMonitor(
        LIMITS, zones=ZoneConfig(**{**vars(PUSHER), "contact_creep_speed": 0.05})
    )
    gated(monitor, [0.2, 0.0, 0.0], 0.0)
    monitor.on_contacts([BLOCK], 0.1, points=[(0.025, 0.0)], normals=[(1.0, 0.0)])
    out = gated(monitor, [0.3, 0.1, 0.0], 0.2)
    assert out[0] == pytest.approx(0.05) and out[1] == pytest.approx(0.1)
    assert gated(monitor, [0.03, 0.0, 0.0], 0.2) == [0.03, 0.0, 0.0]
