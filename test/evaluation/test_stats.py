"""Evaluation statistics on synthetic episode records."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_pruned_ros.evaluation.stats import percentile, summarize, wilson_interval


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_estimate_and_stays_in_unit_range(kn) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo - 1e-12 <= k / n <= hi + 1e-12


def test_wilson_interval_at_the_edges_has_its_closed_form() -> None:
    # 0 of n: the upper bound is z^2 / (n + z^2); n of n mirrors it.
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))


def test_wilson_interval_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng, p, n, covered = random.Random(0), 0.3, 200, 0
    for _ in range(2000):
        k = sum(rng.random() < p for _ in range(n))
        lo, hi = wilson_interval(k, n)
        covered += lo <= p <= hi
    assert 0.93 <= covered / 2000 <= 0.97


def test_percentile_is_nearest_rank() -> None:
    assert percentile(list(range(1, 101)), 50) == 50
    assert percentile(list(range(1, 101)), 99) == 99
    assert math.isnan(percentile([], 50))


def test_summary_counts_rates_violations_and_splits() -> None:
    records = [
        {"success": True, "unsafe": False, "violations": {}, "split": "train", "spl": 0.8,
         "step_latency_ms": [1.0, 2.0]},
        {"success": False, "unsafe": True, "violations": {"collision": 2}, "collisions": 2,
         "split": "heldout", "spl": 0.0, "step_latency_ms": [3.0]},
        {"success": True, "unsafe": True, "violations": {"speed": 1}, "split": "train",
         "spl": 0.6, "step_latency_ms": [4.0]},
    ]  # fmt: skip
    s = summarize(records)
    assert s["episodes"] == 3
    assert s["success"]["count"] == 2 and s["success"]["rate"] == pytest.approx(2 / 3)
    assert s["unsafe"]["count"] == 2
    assert s["violations_per_episode"] == {"collision": pytest.approx(2 / 3), "speed": 1 / 3}
    assert s["collisions_per_episode"] == pytest.approx(2 / 3)
    assert s["spl"] == pytest.approx(1.4 / 3)
    assert s["latency_ms"]["p50"] == 2.0
    assert s["by_split"]["train"]["success"]["rate"] == 1.0
    assert s["by_split"]["heldout"]["unsafe"]["rate"] == 1.0
