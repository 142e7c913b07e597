"""The monitor's counting and gating rules, on explicit timelines (no ROS needed)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_pruned_ros.monitor import CATEGORIES, SafetyLimits, SafetyMonitor, write_reports

ROOT = Path(__file__).resolve().parents[2]
LIMITS = SafetyLimits(control_rate_hz=10.0, command_timeout_s=0.3, camera_timeout_s=0.3)


def test_categories_match_the_message_constants() -> None:
    text = (ROOT / "msg" / "SafetyEvent.msg").read_text()
    declared = re.findall(r"^string [A-Z_]+=(\w+)$", text, flags=re.M)
    assert tuple(declared) == CATEGORIES


@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_each_contact_onset_is_counted_exactly_once(touching: list[bool]) -> None:
    monitor = SafetyMonitor(LIMITS)
    for i, touch in enumerate(touching):
        contacts = [("base", "wall", 5.0)] if touch else [("base", "floor", 1e-6)]
        monitor.on_contacts(contacts, now=i * 0.1)
    onsets = sum(1 for i, t in enumerate(touching) if t and (i == 0 or not touching[i - 1]))
    assert monitor.episode.counts["collision"] == onsets
    assert monitor.episode.unsafe == (onsets > 0)


def test_commands_pass_while_fresh_and_stop_when_stale() -> None:
    monitor = SafetyMonitor(LIMITS)
    assert monitor.decide(0.0).stop, "nothing to pass before the first command"
    t = 0.0
    for _ in range(5):
        monitor.on_command([0.2, 0, 0], [0, 0, 0.1], t)
        monitor.on_camera(t, t)
        monitor.on_policy_heartbeat(t)
        assert not monitor.decide(t + 0.05).stop
        t += 0.1
    last = t - 0.1
    decision = monitor.decide(last + 0.31)
    assert decision.stop and decision.reason == "stale_command"
    assert monitor.episode.counts["stale_command"] == 1
    assert monitor.episode.counts["stale_camera"] == 1
    monitor.record_output(True, last + 0.31)
    assert monitor.episode.time_to_stop == pytest.approx(0.0)


@pytest.mark.parametrize("source", ["camera", "policy"])
def test_an_expected_input_that_never_arrives_stops_once_commands_flow(source: str) -> None:
    """A camera (or heartbeat) topic wired wrong never delivers: the node's gate expects it, so
    it goes stale `timeout` after the first command instead of leaving the check off; a gate
    that does not expect it (the in-process loops feed no camera) passes; a 0 timeout is the
    way to run without the input."""
    limits = SafetyLimits(control_rate_hz=10.0, camera_timeout_s=0.3, policy_timeout_s=0.3)
    feed_other = {"camera": "on_policy_heartbeat", "policy": "on_camera"}[source]
    category = {"camera": "stale_camera", "policy": "policy_lost"}[source]

    def run(monitor: SafetyMonitor) -> list[str]:
        reasons = []
        for i in range(10):
            t = 1.0 + 0.1 * i
            monitor.on_command([0.2, 0, 0], [0, 0, 0], t)
            other = getattr(monitor, feed_other)
            other(t, t) if feed_other == "on_camera" else other(t)
            decision = monitor.decide(t + 0.01)
            reasons.append(decision.reason if decision.stop else "")
        return reasons

    expecting = SafetyMonitor(limits, expected=("camera", "policy"))
    reasons = run(expecting)
    assert reasons[:3] == ["", "", ""], "stale before its timeout had passed"
    assert set(reasons[4:]) == {category}, reasons
    assert expecting.episode.counts[category] == 1
    assert "since commands began" in expecting.episode.events[-1].text

    assert set(run(SafetyMonitor(limits))) == {""}, "a gate not expecting it must not stop"
    off = SafetyLimits(control_rate_hz=10.0, camera_timeout_s=0.0, policy_timeout_s=0.0)
    assert set(run(SafetyMonitor(off, expected=("camera", "policy")))) == {""}


def test_expected_inputs_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="'camera' or 'policy'"):
        SafetyMonitor(LIMITS, expected=("lidar",))


def test_a_stop_is_held_after_the_condition_clears() -> None:
    monitor = SafetyMonitor(SafetyLimits(stop_hold_s=0.5, camera_timeout_s=0, policy_timeout_s=0))
    monitor.on_command([0.1], [0.0], 0.0)
    monitor.on_contacts([("base", "wall", 1.0)], 0.0)
    monitor.on_contacts([], 0.1)
    monitor.on_command([0.1], [0.0], 0.1)
    assert monitor.decide(0.2).stop
    monitor.on_command([0.1], [0.0], 0.6)
    assert not monitor.decide(0.61).stop


def test_non_finite_command_is_invalid_and_stops() -> None:
    monitor = SafetyMonitor(LIMITS)
    monitor.on_command([float("nan")], [0.0], 0.0)
    assert monitor.decide(0.0).stop
    assert monitor.episode.counts["invalid_action"] == 1


def test_speed_is_counted_and_clamped_but_does_not_stop_by_default() -> None:
    monitor = SafetyMonitor(
        SafetyLimits(max_linear_speed=0.5, camera_timeout_s=0, policy_timeout_s=0)
    )
    monitor.on_command([3.0, 4.0], [0.0], 0.0)
    assert monitor.episode.counts["speed"] == 1
    assert not monitor.decide(0.01).stop
    lin, _ = monitor.clamp([3.0, 4.0], [0.0])
    assert lin == pytest.approx([0.3, 0.4])


def test_joint_within_five_percent_of_its_range_is_flagged() -> None:
    monitor = SafetyMonitor(LIMITS)
    monitor.on_joints(["a", "b"], [0.04, 0.5], [0.0, 0.0], [1.0, 1.0], 0.0)
    assert monitor.episode.counts["joint_limit"] == 1
    assert monitor.episode.events[0].key == "a"


def test_episodes_keep_separate_counters_and_reports_are_written(tmp_path: Path) -> None:
    monitor = SafetyMonitor(LIMITS, episode_id="ep1")
    monitor.on_contacts([("base", "wall", 1.0)], 0.0)
    monitor.start_episode("ep2", 1.0)
    monitor.on_ranges([2.0, 0.05], 1.1)  # proximity disabled (min_obstacle_distance = 0)
    episodes = monitor.all_episodes()
    assert [e.episode_id for e in episodes] == ["ep1", "ep2"]
    assert [e.unsafe for e in episodes] == [True, False]
    path = write_reports(episodes, tmp_path)
    data = json.loads(path.read_text())
    assert data["summary"] == {
        "episodes": 2,
        "unsafe_episodes": 1,
        "violations": {c: int(c == "collision") for c in CATEGORIES},
    }
    rows = list(csv.DictReader((tmp_path / "safety.csv").open()))
    assert [r["unsafe"] for r in rows] == ["1", "0"]
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


def test_unknown_limit_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_linear_sped"):
        SafetyLimits.from_mapping({"max_linear_sped": 1.0})
    limits = SafetyLimits.from_mapping({"workspace_min": [0, 0], "workspace_max": [1, 1]})
    assert limits.workspace_max == (1, 1)


def _feed(monitor: SafetyMonitor, t: float, camera_stamp: float | None) -> bool:
    """One control period of a live policy; True if the gate lets its command pass."""
    monitor.on_command([0.2], [0.0], t)
    monitor.on_policy_heartbeat(t)
    if camera_stamp is not None:
        monitor.on_camera(camera_stamp, t)
    return not monitor.decide(t + 0.01).stop


def test_one_frame_from_the_far_future_does_not_disable_the_camera_check() -> None:
    monitor = SafetyMonitor(LIMITS)
    for i in range(5):
        assert _feed(monitor, i * 0.1, i * 0.1)
    assert not monitor.on_camera(1000.0, 0.45), "a frame 1000 s ahead must be rejected"
    assert monitor.episode.counts["clock_skew"] == 1
    passed = [_feed(monitor, 0.5 + i * 0.1, None) for i in range(10)]  # the camera froze
    assert not any(passed[4:]), "the camera check stayed disabled by the future frame"
    assert monitor.episode.counts["stale_camera"] == 1


def test_a_camera_ahead_then_frozen_passes_no_command() -> None:
    monitor = SafetyMonitor(LIMITS)
    passed = [_feed(monitor, i * 0.1, i * 0.1 + 3.0) for i in range(10)]  # 3 s ahead
    passed += [_feed(monitor, 1.0 + i * 0.1, None) for i in range(30)]  # then frozen
    assert sum(passed) == 0
    assert monitor.episode.counts["clock_skew"] == 1  # one onset, not one per frame
    assert monitor.decide(4.0).reason == "clock_skew"


def test_clock_skew_clears_when_frames_are_on_time_again() -> None:
    monitor = SafetyMonitor(LIMITS)
    assert not _feed(monitor, 0.0, 5.0)
    assert monitor.on_camera(0.1, 0.1)
    assert _feed(monitor, 1.0, 1.0)  # after stop_hold_s the gate reopens
    within = LIMITS.clock_skew_tolerance_s / 2
    assert monitor.on_camera(1.1 + within, 1.1), "a stamp within the tolerance is accepted"


def test_a_stamped_command_from_the_future_is_not_forwarded() -> None:
    monitor = SafetyMonitor(LIMITS)
    assert not monitor.on_command([0.2], [0.0], 0.0, stamp=2.0)
    assert monitor.episode.counts["clock_skew"] == 1
    assert monitor.decide(0.01).stop
    assert monitor.on_command([0.2], [0.0], 0.1, stamp=0.1)
    stale = 0.1 + LIMITS.command_timeout_s + 0.05
    assert monitor.decide(stale).reason == "stale_command", "ages count from the stamp"


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_linear_speed", -0.1),
        ("command_timeout_s", -1.0),
        ("clock_skew_tolerance_s", -0.01),
        ("control_rate_hz", 0.0),
        ("stop_hold_s", float("nan")),
    ],
)
def test_invalid_limits_are_refused_with_the_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SafetyLimits.from_mapping({field: value})


def test_safety_yamls_take_the_one_contact_threshold_and_stop_categories() -> None:
    """The contact force threshold and the stop categories are written once (monitor/limits.py,
    monitor/categories.py): a safety YAML either leaves them out or, where a robot differs,
    says so with a value the limits accept; today every shipped one leaves them out."""
    from vla_pruned_ros.monitor.categories import STOP_CATEGORIES
    from vla_pruned_ros.monitor.detectors import CONTACT_FORCE_THRESHOLD
    from vla_pruned_ros.params_file import read_ros_params

    files = sorted((ROOT / "config").glob("safety_*.yaml"))
    assert len(files) >= 3
    for path in files:
        limits = read_ros_params(path, "safety_monitor").get("limits", {})
        assert "contact_force_threshold" not in limits and "stop_categories" not in limits, path
        parsed = SafetyLimits.from_mapping(limits)
        assert parsed.contact_force_threshold == CONTACT_FORCE_THRESHOLD
        assert parsed.stop_categories == STOP_CATEGORIES
