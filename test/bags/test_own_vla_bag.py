"""`vla-eval bag` on a user's own VLA: the compressed OpenVLA-contract fixture
(test/checkpoint_fixtures.py; not OpenVLA) replayed on the committed navigation bag. Its 7-D
end-effector actions are refused against the bag's twist with both spaces named, then
connected with `action_map`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))
from checkpoint_fixtures import write_openvla_contract_fixture  # noqa: E402
from test_own_vla_node import compress_fixture  # noqa: E402

NAV_BAG = Path(__file__).resolve().parents[1] / "fixtures" / "bags" / "nav"
ACTION_MAP = "{action_map: {names: [linear_x, angular_z], order: [x, yaw], scale: [10, 10]}}"


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.eval", "bag", *args],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_an_openvla_contract_artifact_replays_a_bag_through_an_action_map(tmp_path: Path) -> None:
    art = compress_fixture(write_openvla_contract_fixture(tmp_path / "fx"), tmp_path / "art")
    refused = _eval(str(NAV_BAG), "--model", str(art), "--trust-remote-code",
                    "--json", str(tmp_path / "refused.json"))  # fmt: skip
    assert refused.returncode == 2
    assert "acts in ee_delta ['x', 'y', 'z', 'roll', 'pitch', 'yaw', 'gripper']" in refused.stderr
    assert "expects base_velocity ['linear_x', 'angular_z']" in refused.stderr
    assert "action_map" in refused.stderr
    out = tmp_path / "mapped.json"
    done = _eval(str(NAV_BAG), "--model", str(art), "--trust-remote-code",
                 "--adapter-options", ACTION_MAP, "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    (model,) = result["models"].values()
    assert model["variant"] == "gluestick"
    assert result["task"] == "nav" and result.get("error") is None
