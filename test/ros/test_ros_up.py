"""`vla-ros up` starts real node processes from a bringup file and stops them cleanly; when a node
dies the safety monitor stops last, after it has sent zero commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cmd_watcher import Watcher

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
        "executable": "safety_monitor_node",
        "params": [str(ROOT / "config" / "safety_monitor_nav.yaml")],
        "overrides": {"report_dir": str(tmp_path / "reports")},
    }
    proc = _vla_ros("up", str(_bringup(tmp_path, [monitor])))
    _read_until(proc, "[safety_monitor_node]", 20.0)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    assert "stopped: SIGINT" in out
    assert (tmp_path / "reports" / "safety.json").is_file(), "the monitor lost its report"


def test_a_node_that_dies_takes_the_graph_down_with_a_reason(tmp_path: Path) -> None:
    nodes = [
        {"executable": "safety_monitor_node", "overrides": {"report_dir": str(tmp_path / "r")}},
        {"executable": "policy_node", "overrides": {"artifact": str(tmp_path / "missing")}},
    ]
    proc = _vla_ros("up", str(_bringup(tmp_path, nodes)))
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, out
    assert "policy_node died: exited with code 2" in out
    assert "does not exist" in out


def test_a_killed_policy_leaves_the_gate_sending_zeros_and_stopping_last(tmp_path: Path) -> None:
    timeout_s, rate_hz = 0.3, 10.0
    monitor = {
        "executable": "safety_monitor_node",
        "params": [str(ROOT / "config" / "safety_monitor_nav.yaml")],
        "overrides": {
            "report_dir": str(tmp_path / "reports"),
            "limits.command_timeout_s": timeout_s,
            "limits.camera_timeout_s": timeout_s,
            "limits.control_rate_hz": rate_hz,
        },
    }
    policy = {"script": str(ROOT / "test" / "ros" / "fake_policy.py"), "name": "fake_policy"}
    proc = _vla_ros("up", str(_bringup(tmp_path, [monitor, policy])))
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    ).start()
    watcher = Watcher()
    try:
        assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 30.0), (
            "the gate never passed the policy's command"
        )
        pid_line = next(ln for ln in lines if "started fake_policy (pid" in ln)
        pid = int(pid_line.split("(pid ")[1].split(")")[0])
        subprocess.run(["kill", "-9", str(pid)], check=True)
        t_kill = time.monotonic()
        assert proc.wait(timeout=60) == 1, "".join(lines)
        watcher.spin_until(lambda: False, 1.0)
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert "fake_policy died: killed by SIGKILL" in out, out
    zeros = [w for w, x in watcher.cmds if w > t_kill and x == 0.0]
    assert len(zeros) >= 2, f"{len(zeros)} zero commands after the kill:\n{out}"
    assert watcher.cmds[-1][1] == 0.0, "the last command the robot got was not a stop"
    assert out.index("keeps the robot stopped") < out.index(
        "[safety_monitor_node] final zero command"
    )
    assert (tmp_path / "reports" / "safety.json").is_file()


def test_a_bringup_role_must_be_known(tmp_path: Path) -> None:
    path = _bringup(tmp_path, [{"executable": "safety_monitor_node", "role": "gatekeeper"}])
    proc = _vla_ros("up", str(path))
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 2 and "role 'gatekeeper'" in out, out


def test_unknown_executable_is_a_clear_error(tmp_path: Path) -> None:
    proc = _vla_ros("up", str(_bringup(tmp_path, [{"executable": "nope"}])))
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 2
    assert "unknown executable 'nope'" in out and "Traceback" not in out


def test_bringup_paths_resolve_against_the_yaml_folder_and_adapters_are_checked(
    tmp_path: Path,
) -> None:
    """A user's `my_robot/bringup.yaml` naming `artifact: art` and `params: [p.yaml]` means the
    files beside it, wherever `vla-ros up` is started; a shipped file's `root: ..` keeps its
    package-relative paths; a misspelt adapter is refused with the names that work."""
    from vla_pruned_ros.bringup import BringupError, load_bringup

    robot = tmp_path / "my_robot"
    robot.mkdir()
    (robot / "p.yaml").write_text("safety_monitor:\n  ros__parameters: {}\n")
    options = {"action_map": {"names": ["linear_x"], "order": ["x"]}}
    policy = {
        "executable": "policy_node",
        "overrides": {"artifact": "art", "adapter": "openvla", "adapter_options": options},
    }
    nodes = [{"executable": "safety_monitor_node", "params": ["p.yaml"]}, policy]  # fmt: skip
    (robot / "bringup.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
    specs, _ = load_bringup(robot / "bringup.yaml")
    assert specs[0].params == [robot / "p.yaml"]
    assert specs[1].overrides["artifact"] == str(robot / "art")
    assert json.loads(specs[1].overrides["adapter_options"]) == options  # a string parameter
    policy["overrides"]["artifact"] = "embedded"  # names no file
    (robot / "bringup.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
    assert load_bringup(robot / "bringup.yaml")[0][1].overrides["artifact"] == "embedded"
    shipped, _ = load_bringup(ROOT / "config" / "bringup_robot.yaml")
    assert shipped[0].params == [ROOT / "config" / "safety_monitor_nav.yaml"]
    policy["overrides"]["adapter"] = "openvla7b"
    (robot / "bringup.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
    with pytest.raises(BringupError, match="openvla7b.*embedded, openvla, lerobot, text.*Class"):
        load_bringup(robot / "bringup.yaml")


def test_vla_ros_refuses_a_bad_adapter_flag_with_the_valid_names(tmp_path: Path) -> None:
    for args in (["up", "x.yaml", "--adapter", "open-vla"],
                 ["demo", "--adapter", "openvla", "--adapter-options", "[1, 2]"]):  # fmt: skip
        proc = _vla_ros(*args)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 2, out
        assert ("embedded, openvla, lerobot, text" in out) or ("must be a mapping" in out), out


def test_vla_ros_up_passes_adapter_flags_to_the_policy_node(tmp_path: Path) -> None:
    """`vla-ros up BRINGUP --artifact A --adapter openvla --adapter-options ...`: the policy
    node gets them as parameters, which its log shows: the openvla preset refuses a misspelt
    option and lists the ones it takes."""
    (tmp_path / "empty").mkdir()
    nodes = [{"executable": "policy_node"}]
    proc = _vla_ros("up", str(_bringup(tmp_path, nodes)), "--artifact", str(tmp_path / "empty"),
                    "--adapter", "openvla", "--adapter-options", "{cache_promt: false}",
                    "--trust-remote-code")  # fmt: skip
    out = proc.communicate(timeout=90)[0]
    assert proc.returncode == 1, out
    assert "adapter 'openvla' takes no option 'cache_promt'; its options: " in out, out
    assert "cache_prompt" in out and "unnorm_key" in out, out
