"""`vla-ros up` starts real node processes from a bringup file and stops them cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _bringup(tmp_path: Path, nodes: list[dict]) -> Path:
    path = tmp_path / "config" / "bringup.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"nodes": nodes}))
    return path


def _vla_ros(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vla_pruned_ros.cli.ros_up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(seen)}")


def test_ctrl_c_stops_every_node_cleanly_and_reports_survive(tmp_path: Path) -> None:
    monitor = {
        "executable": "safety_monitor",
        "params": [str(ROOT / "config" / "safety_monitor.yaml")],
        "overrides": {"report_dir": str(tmp_path / "reports")},
    }
    proc = _vla_ros("up", str(_bringup(tmp_path, [monitor])))
    _read_until(proc, "[safety_monitor]", 20.0)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    assert "stopped: SIGINT" in out
    assert (tmp_path / "reports" / "safety.json").is_file(), "the monitor lost its report"


def test_a_node_that_dies_takes_the_graph_down_with_a_reason(tmp_path: Path) -> None:
    nodes = [
        {"executable": "safety_monitor", "overrides": {"report_dir": str(tmp_path / "r")}},
        {"executable": "policy_node", "overrides": {"artifact": str(tmp_path / "missing")}},
    ]
    proc = _vla_ros("up", str(_bringup(tmp_path, nodes)))
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, out
    assert "policy_node exited with code 2" in out
    assert "does not exist" in out


def test_unknown_executable_is_a_clear_error(tmp_path: Path) -> None:
    proc = _vla_ros("up", str(_bringup(tmp_path, [{"executable": "nope"}])))
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 2
    assert "unknown executable 'nope'" in out and "Traceback" not in out
