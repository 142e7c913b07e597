"""The violation detectors without physics: thresholds, warm-up, margins and debouncing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_pruned_ros.monitor import CATEGORIES
from vla_pruned_ros.sim import safety


def test_physical_categories_are_the_message_names() -> None:
    assert set(safety.PHYSICAL_CATEGORIES) <= set(CATEGORIES)
    assert safety.PHYSICAL_CATEGORIES == (
        "collision", "proximity", "speed", "acceleration", "workspace", "joint_limit",
    )  # fmt: skip


def test_robot_contacts_put_the_robot_first_and_skip_allowed_bodies() -> None:
    contacts = [
        ("obstacle", "pusher", 2.0),
        ("pusher", "block_red", 1.0),
        ("block_green", "table", 5.0),  # not the robot's
        ("pusher", "block_green", 0.5),
    ]
    got = safety.robot_contacts(contacts, robot={"pusher"}, allowed={"block_red"})
    assert got == [("pusher", "obstacle", 2.0), ("pusher", "block_green", 0.5)]


def test_contact_conditions_merge_points_and_apply_the_force_threshold() -> None:
    contacts = [("base", "wall", 0.2), ("base", "wall", 0.7), ("base", "post", 1e-4)]
    got = safety.contact_conditions(contacts)
    assert list(got) == ["base|wall"] and got["base|wall"].value == 0.7


def test_fast_objects_are_ignored_during_warmup() -> None:
    speeds = {"block_red": 1.5, "block_blue": 0.99}
    assert safety.fast_objects(speeds, step=safety.SPEED_WARMUP_STEPS) == {}
    got = safety.fast_objects(speeds, step=safety.SPEED_WARMUP_STEPS + 1)
    assert list(got) == ["block_red"] and got["block_red"].threshold == 1.0


@pytest.mark.parametrize(
    ("q", "flagged"), [(-0.46, True), (-0.44, False), (0.0, False), (0.44, False), (0.46, True)]
)
def test_joint_limit_band_is_five_percent_of_the_range(q: float, flagged: bool) -> None:
    got = safety.near_joint_limits(["x"], [q], [-0.5], [0.5])  # band: 0.05 of a 1.0 range
    assert bool(got) == flagged


def test_workspace_and_proximity() -> None:
    assert safety.outside_workspace([0.0, 0.6], [-0.5, -0.5], [0.5, 0.5]).keys() == {"axis1"}
    assert safety.outside_workspace([9.0], [], []) == {}
    assert safety.too_close([math.inf, 0.0, 0.3, 1.0], 0.35)["nearest"].value == 0.3
    assert safety.too_close([0.3], 0.0) == {}


@given(st.lists(st.booleans(), max_size=40))
def test_a_contact_is_counted_once_per_onset(touching: list[bool]) -> None:
    """However long a contact lasts, it is one collision; a new touch after a break is another."""
    episode = safety.EpisodeSafety()
    episode.start("e", 0.0)
    for step, on in enumerate(touching):
        episode.contacts([("base", "wall", 1.0)] if on else [], now=0.1 * step)
    onsets = sum(on and (i == 0 or not touching[i - 1]) for i, on in enumerate(touching))
    assert episode.counts().get("collision", 0) == onsets
    assert episode.unsafe == (onsets > 0)


def test_events_are_plain_dicts_for_messages_and_reports() -> None:
    episode = safety.EpisodeSafety()
    episode.start("e", 0.0)
    episode.object_speeds({"block_red": 2.0}, step=10, now=1.0)
    (event,) = episode.pop_events()
    assert event["category"] == "speed" and event["key"] == "block_red"
    assert episode.pop_events() == []
