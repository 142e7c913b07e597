"""The safety monitor as a real process on real DDS: it passes a live policy's commands, and stops
the robot within two control periods of a killed policy or a stalled camera; its last word on
SIGTERM is a zero command; frames from the future stop it; parameters change live or are refused
through the real `set_parameters` service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cmd_watcher import Watcher
from vla_pruned_ros_msgs.msg import SafetyStatus

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
RATE_HZ, TIMEOUT_S = 10.0, 0.3
PERIOD_S = 1.0 / RATE_HZ


def _monitor_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "-m", "vla_pruned_ros.ros.safety_monitor_node", "--ros-args",
        "--params-file", str(ROOT / "config" / "safety_monitor_nav.yaml"),
        "-p", f"report_dir:={tmp_path}",
        "-p", f"limits.control_rate_hz:={RATE_HZ}",
        "-p", f"limits.command_timeout_s:={TIMEOUT_S}",
        "-p", f"limits.camera_timeout_s:={TIMEOUT_S}",
        "-p", "limits.max_linear_speed:=0.5",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def graph(tmp_path: Path):
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        full_env = {**os.environ, **(env or {})}
        procs[name] = subprocess.Popen([sys.executable, *args], cwd=HERE, env=full_env)
        return procs[name]

    start("monitor", *_monitor_args(tmp_path))
    watcher = Watcher()
    yield start, procs, watcher
    watcher.close()
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _first_stop_after(cmds: list[tuple[float, float]], t: float) -> float | None:
    return next((when for when, x in cmds if when > t and x == 0.0), None)


def test_killed_policy_is_stopped_within_two_control_periods(graph, tmp_path: Path) -> None:
    start, procs, watcher = graph
    policy = start("policy", "fake_policy.py")
    assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0), (
        "the monitor never passed a command from a live policy"
    )
    watcher.spin_until(lambda: False, 1.0)  # steady state
    policy.send_signal(signal.SIGKILL)
    policy.wait()
    t_kill = time.monotonic()
    assert watcher.spin_until(lambda: _first_stop_after(watcher.cmds, t_kill), 3.0)
    last_pass = max(when for when, x in watcher.cmds if x == 0.2)
    stop = _first_stop_after(watcher.cmds, last_pass)
    assert stop - last_pass <= TIMEOUT_S + 2 * PERIOD_S, f"stopped after {stop - last_pass:.3f} s"
    watcher.spin_until(lambda: False, 0.5)
    assert all(x == 0.0 for when, x in watcher.cmds if when > stop), "commands leaked after stop"

    procs["monitor"].send_signal(signal.SIGTERM)
    assert procs["monitor"].wait(timeout=10) == 0
    report = json.loads((tmp_path / "safety.json").read_text())
    counts = report["episodes"][-1]["counts"]
    assert counts["stale_command"] >= 1  # the kill (a loaded machine may add an earlier gap)
    assert report["episodes"][-1]["time_to_stop"] <= 2 * PERIOD_S


def test_stalled_camera_stops_the_robot(graph) -> None:
    start, _procs, watcher = graph
    policy = start("policy", "fake_policy.py")
    assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0)
    # a stale_camera stop at start-up (the first command before the first best-effort frame)
    # is not this one: only the statuses after the stall are judged
    n = len(watcher.status)
    policy.send_signal(signal.SIGUSR1)  # stall the camera; commands keep coming

    def stopped_for_camera() -> bool:
        return any(
            s.gate == SafetyStatus.GATE_STOP and s.stop_reason == "stale_camera"
            for s in watcher.status[n:]
        )

    assert watcher.spin_until(stopped_for_camera, 10.0), (
        "no stop for the stalled camera; reasons seen: "
        f"{sorted({(s.gate, s.stop_reason) for s in watcher.status})}"
    )
    t_stop = time.monotonic()
    watcher.spin_until(lambda: False, 1.0)
    after = [x for when, x in watcher.cmds if when > t_stop + 2 * PERIOD_S]
    assert after and all(x == 0.0 for x in after), "commands passed with a stale camera"
    last = watcher.status[-1]
    assert last.counts[list(last.categories).index("stale_camera")] >= 1
    assert last.unsafe


def test_a_camera_that_never_arrives_stops_the_robot(graph) -> None:
    """A camera topic wired wrong (or a best-effort camera whose first frames were lost)
    must not leave the camera check off: commands flow, no frame ever comes, the gate stops."""
    start, _procs, watcher = graph
    start("policy", "fake_policy.py", env={"FAKE_NO_CAMERA": "1"})
    seen = lambda: sorted({s.stop_reason for s in watcher.status})  # noqa: E731
    assert watcher.spin_until(lambda: _stopped_for(watcher, "stale_camera"), 20.0), (
        f"no stop for a camera that never arrived; saw {seen()}"
    )
    t_stop = time.monotonic()
    watcher.spin_until(lambda: False, 1.0)
    after = [x for when, x in watcher.cmds if when > t_stop + 2 * PERIOD_S]
    assert after and all(x == 0.0 for x in after), "commands passed without any camera frame"


def test_sigterm_makes_a_zero_command_the_last_word(graph) -> None:
    start, procs, watcher = graph
    start("policy", "fake_policy.py")
    assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0)
    procs["monitor"].send_signal(signal.SIGTERM)  # the policy is still commanding 0.2 m/s
    assert procs["monitor"].wait(timeout=20) == 0
    watcher.spin_until(lambda: False, 1.0)
    assert watcher.cmds[-1][1] == 0.0, "the robot was left holding the policy's last command"


def _stopped_for(watcher: Watcher, reason: str) -> bool:
    return any(s.gate == SafetyStatus.GATE_STOP and s.stop_reason == reason for s in watcher.status)


def test_a_camera_stamped_in_the_future_stops_and_is_counted_as_clock_skew(graph) -> None:
    start, _procs, watcher = graph
    start("policy", "fake_policy.py", env={"FAKE_CAMERA_AHEAD_S": "3.0"})
    assert watcher.spin_until(lambda: _stopped_for(watcher, "clock_skew"), 20.0)
    t_stop = time.monotonic()
    watcher.spin_until(lambda: False, 2.0)
    after = [x for when, x in watcher.cmds if when > t_stop]
    assert after and all(x == 0.0 for x in after), "a camera 3 s ahead let commands pass"
    last = watcher.status[-1]
    assert last.counts[list(last.categories).index("clock_skew")] == 1  # one onset


def test_parameters_apply_live_or_are_refused_with_a_reason(graph) -> None:
    start, _procs, watcher = graph
    start("policy", "fake_policy.py", env={"FAKE_LINEAR_X": "0.4"})
    assert watcher.spin_until(lambda: any(x == 0.4 for _, x in watcher.cmds), 20.0), (
        "0.4 m/s should pass unclamped under a 0.5 m/s limit"
    )
    (result,) = watcher.set_parameters(limits__max_linear_speed=0.2)
    assert result.successful, result.reason
    t_set = time.monotonic()
    assert watcher.spin_until(lambda: any(0 < x < 0.4 for w, x in watcher.cmds if w > t_set), 10)
    watcher.spin_until(lambda: False, 1.0)
    moving = [x for when, x in watcher.cmds if when > t_set + 0.5 and x != 0.0]
    assert moving and max(moving) == pytest.approx(0.2), "the new limit is not applied"
    last = watcher.status[-1]
    assert last.counts[list(last.categories).index("speed")] >= 1

    refused = {
        "limits__control_rate_hz": 0.0,
        "limits__max_linear_speed": -0.1,
        "limits__stop_categories": ["collision", "no_such_category"],
        "cmd_topic": "elsewhere",
        "report_dir": "/tmp/elsewhere",
    }
    for name, value in refused.items():
        (result,) = watcher.set_parameters(**{name: value})
        assert not result.successful, f"{name}={value!r} was accepted"
        assert result.reason, f"{name}={value!r} refused without a reason"
    assert (
        "no_such_category"
        in watcher.set_parameters(limits__stop_categories=["no_such_category"])[0].reason
    )

    (result,) = watcher.set_parameters(limits__control_rate_hz=2.0)  # the timer is recreated
    assert result.successful, result.reason
    watcher.spin_until(lambda: False, 1.0)
    n0 = len(watcher.status)
    watcher.spin_until(lambda: False, 3.0)
    assert len(watcher.status) - n0 <= 3.0 * 2.0 + 2, "status still at the old 10 Hz"


@pytest.mark.parametrize("ahead_s", [0.0, 3.0])
def test_twist_stamped_in_and_out_and_future_stamps_refused(tmp_path: Path, ahead_s: float) -> None:
    args = _monitor_args(tmp_path, "-p", "twist_stamped:=true")
    env = {**os.environ, "FAKE_STAMPED": "1", "FAKE_CMD_AHEAD_S": str(ahead_s)}
    procs = [
        subprocess.Popen([sys.executable, *args], cwd=HERE),
        subprocess.Popen([sys.executable, "fake_policy.py"], cwd=HERE, env=env),
    ]
    watcher = Watcher(stamped=True)
    try:
        if ahead_s == 0.0:
            assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0)
            assert set(watcher.frames) == {"base_link"}
        else:
            assert watcher.spin_until(lambda: _stopped_for(watcher, "clock_skew"), 20.0)
            watcher.spin_until(lambda: False, 1.0)
            assert watcher.cmds and all(x == 0.0 for _, x in watcher.cmds), (
                "a command stamped 3 s ahead was forwarded"
            )
    finally:
        watcher.close()
        for proc in procs:
            proc.kill()
            proc.wait()


def test_lifecycle_inactive_forwards_nothing_and_deactivate_sends_one_zero(tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    procs = [
        subprocess.Popen([sys.executable, *_monitor_args(tmp_path, "-p", "autostart:=false")]),
        subprocess.Popen([sys.executable, "fake_policy.py"], cwd=HERE),
    ]
    watcher = Watcher()
    try:
        assert watcher.spin_until(lambda: len(watcher.status) > 5, 30.0), "monitor not running"
        watcher.spin_until(lambda: False, 1.0)
        assert not watcher.cmds, "an unconfigured monitor published commands"
        assert watcher.change_state(Transition.TRANSITION_CONFIGURE)
        watcher.spin_until(lambda: False, 1.0)
        assert not watcher.cmds, "an inactive monitor published commands"
        assert watcher.change_state(Transition.TRANSITION_ACTIVATE)
        assert watcher.spin_until(lambda: any(x == 0.2 for _, x in watcher.cmds), 20.0)
        assert watcher.change_state(Transition.TRANSITION_DEACTIVATE)
        t_off = time.monotonic()
        watcher.spin_until(lambda: False, 1.5)
        assert watcher.cmds[-1][1] == 0.0, "deactivate did not end on a zero command"
        late = [w for w, _ in watcher.cmds if w > t_off + 0.5]
        assert not late, f"{len(late)} commands after deactivate"
    finally:
        watcher.close()
        for proc in procs:
            proc.kill()
            proc.wait()
