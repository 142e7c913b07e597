"""The bag recorded before Contacts.msg had `position`/`normal` (test/fixtures/bags/
legacy_contacts_v1) still plays and evaluates: `vla-bag play` (a real process) sends its
contacts, translated to the installed type, to a real safety monitor process on the bag's clock,
which counts the collisions the recording's own monitor counted (its /safety/events); offline
replay gives the numbers it gave before the message changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from vla_pruned_ros.bags.reader import BagReader
from vla_pruned_ros.evaluation.bag_replay import evaluate_bag
from vla_pruned_ros.monitor.limits import TASK_SAFETY_CONFIG

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "test" / "fixtures" / "bags" / "legacy_contacts_v1"
EPISODES = ["manip-1000046", "manip-1000047"]


def _recorded_collisions() -> Counter:
    with BagReader(LEGACY) as reader:
        return Counter(r.message.episode_id for r in reader.records(["/safety/events"])
                       if r.message.category == "collision")  # fmt: skip


def test_legacy_bag_plays_to_the_monitor_with_the_recorded_collision_counts(tmp_path) -> None:
    recorded = _recorded_collisions()
    assert [recorded[e] for e in EPISODES] == [7, 7]
    monitor = subprocess.Popen(
        [sys.executable, "-m", "vla_pruned_ros.ros.safety_monitor_node", "--ros-args",
         "--params-file", str(ROOT / TASK_SAFETY_CONFIG["manip"]),
         "-p", "use_sim_time:=true", "-p", f"report_dir:={tmp_path}",
         # this graph replays only contacts and joints: the timing checks are off
         "-p", "limits.command_timeout_s:=0.0", "-p", "limits.camera_timeout_s:=0.0",
         "-p", "limits.policy_timeout_s:=0.0"],
        cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    try:
        played = subprocess.run(
            [sys.executable, "-m", "vla_pruned_ros.cli.bag", "play", str(LEGACY), "--rate", "2",
             "--wait-for-subscribers", "60",
             "--topics", "/clock", "/contacts", "/episode", "/joint_states"],
            capture_output=True, text=True, timeout=180, cwd=ROOT,
        )  # fmt: skip
        assert played.returncode == 0, played.stderr[-3000:]
        assert "older message definitions" in played.stderr
        report = tmp_path / "safety.json"
        deadline = time.monotonic() + 20
        episodes: dict = {}
        while time.monotonic() < deadline:
            if report.exists():
                episodes = {e["episode_id"]: e for e in json.loads(report.read_text())["episodes"]}
                if all(e in episodes and episodes[e]["end_time"] is not None for e in EPISODES):
                    break
            time.sleep(0.2)
    finally:
        monitor.terminate()
        monitor.wait(timeout=30)
    counts = {e: episodes[e]["counts"]["collision"] for e in EPISODES if e in episodes}
    assert counts == {e: recorded[e] for e in EPISODES}, (counts, sorted(episodes))


def test_legacy_bag_evaluates_as_before_the_message_changed() -> None:
    """The numbers `evaluate_bag` gave for these bytes at 6a97c7f, when they were the manip
    fixture and Contacts.msg had three arrays."""
    result = evaluate_bag(LEGACY, ["embedded"], progress=False)
    assert result["error"] is None and result["task"] == "manip"
    assert (result["frames"], result["recorded_actions"], result["unmatched_actions"]) == (
        132, 118, 0)  # fmt: skip
    assert result["recorded_command_violations"] == {}
    dense = result["models"]["embedded"]
    assert dense["steps"] == 118 and dense["command_violations"] == {}
    assert [(e["episode"], e["steps"]) for e in dense["per_episode"]] == [
        ("manip-1000046", 61), ("manip-1000047", 57)]  # fmt: skip
    assert dense["vs_recorded"]["mse"] < 1e-8
