"""The whole graph over DDS: simulation node, policy node with the committed embedded VLA, and
the safety monitor as separate processes; the robot reaches its goal."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path


def test_navigation_episodes_reach_the_goal_through_the_ros_graph(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.ros_up", "demo", "--tasks", "nav",
         "--episodes", "2", "--reports", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
        # a domain of its own: no node left over from another test can drive this robot
        env={**os.environ, "ROS_DOMAIN_ID": str(random.SystemRandom().randint(215, 232))},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sim = json.loads((tmp_path / "nav" / "sim_nav.json").read_text())
    assert sim["summary"]["episodes"] == 2
    outcome = [{k: e[k] for k in ("seed", "success", "steps", "distance_to_goal", "violations")}
               for e in sim["episodes"]]  # fmt: skip
    assert sum(e["success"] for e in sim["episodes"]) >= 1, (outcome, result.stdout[-3000:])
    safety = json.loads((tmp_path / "nav" / "safety.json").read_text())
    assert [e["episode_id"] for e in safety["episodes"]][-2:] == ["nav-1000000", "nav-1000001"]
    assert "| nav | 2 |" in result.stdout
