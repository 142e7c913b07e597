"""`vla-ros up` starts an episode only once the policy is active: over real processes (sim,
policy with the embedded model, safety monitor), the monitor sees no `stale_command` or
`policy_lost` at the start of the first episode. Before the sim waited for the policy, an
episode ran half its length while the policy was still loading (6 `stale_command` and 3
`policy_lost` in a 15 s run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
START_WINDOW_S = 3.0  # sim seconds after the episode's start in which the policy must be acting


def _graph(tmp_path: Path) -> Path:
    """config/bringup_nav.yaml with one episode and reports under tmp_path."""
    data = yaml.safe_load((ROOT / "config/bringup_nav.yaml").read_text())
    for node in data["nodes"]:
        node["params"] = [str(ROOT / p) for p in node.get("params", [])]
        overrides = node.setdefault("overrides", {})
        if "report_dir" in overrides:
            overrides["report_dir"] = str(tmp_path / "reports")
        if node["executable"] == "sim_node":
            overrides["episodes"] = 1
    path = tmp_path / "config" / "bringup.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def test_first_episode_starts_with_the_policy_acting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.ros_up", "up", str(_graph(tmp_path))],
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "vla_policy is active" in out, "the sim did not wait for the policy"
    safety = json.loads((tmp_path / "reports" / "safety.json").read_text())
    (episode,) = [e for e in safety["episodes"] if e["episode_id"].startswith("nav-")]
    early = [
        (e["category"], round(e["time"] - episode["start_time"], 2))
        for e in episode["events"]
        if e["category"] in ("stale_command", "policy_lost")
        and e["time"] - episode["start_time"] <= START_WINDOW_S
    ]
    assert not early, f"the episode started before the policy acted: {early}\n{out[-3000:]}"
    # Without the wait (wait_for_node:=""), on a loaded machine the policy was still loading for
    # the whole 15 s episode: 0 commands passed, 142 stops, the robot never moved.
    assert episode["passed_commands"] > 0, f"the policy never acted in the episode: {episode}"
    sim = json.loads((tmp_path / "reports" / "sim_nav.json").read_text())
    assert sim["summary"]["episodes"] == 1
    assert sim["episodes"][0]["path_length"] > 0.05, "the policy's commands never moved the robot"
