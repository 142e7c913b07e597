"""Benchmark: how fast the safety monitor stops the robot when something fails, over real DDS
with real processes (issue 18).

Cases, each repeated `--reps` times; every time is from the fault to the first zero command a
real subscriber on the gated command topic (`cmd_vel`) receives:
- `kill -9` of the policy under `vla-ros up` (the supervisor keeps the gate running; target:
  within `command_timeout_s` + 2 control periods),
- `kill -9` of the policy with hand-started nodes (same target),
- a camera that stalls (target: `camera_timeout_s` + 2 control periods),
- a camera whose clock jumps 3 s ahead (clock skew: its frames are rejected at once; target:
  2 control periods).

The policy is the test suite's stand-in (test/ros/fake_policy.py: a 0.2 m/s command, a camera
frame and a heartbeat at 10 Hz; SIGUSR1 stalls its camera, SIGUSR2 skews its clock); the monitor
is the real node with config/safety_monitor_nav.yaml.

    nice -n 10 .venv/bin/python bench/safety.py --reps 5                  # prints the table
    nice -n 10 .venv/bin/python bench/safety.py --reps 5 --out bench/RESULTS_safety.md

`--out` replaces only this section ("## Stop times") of the results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
import yaml
from geometry_msgs.msg import Twist
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from vla_pruned_ros.monitor.limits import SafetyLimits
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.dds import use_localhost_profile

ROOT = Path(__file__).resolve().parents[1]
FAKE_POLICY = ROOT / "test" / "ros" / "fake_policy.py"
SAFETY_YAML = ROOT / "config" / "safety_monitor_nav.yaml"
SECTION = "## Stop times"


class CommandClock:
    """A real subscriber on the gated command topic: the receipt time of every command."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("safety_bench", context=self.context)
        self.cmds: list[tuple[float, float]] = []  # (monotonic receipt time, linear.x)
        self.node.create_subscription(Twist, topics.CMD, self._on_cmd, 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _on_cmd(self, msg: Twist) -> None:
        self.cmds.append((time.monotonic(), msg.linear.x))

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def moving_since(self, t: float) -> bool:
        return any(w > t and x > 0 for w, x in self.cmds)

    def first_zero_after(self, t: float) -> float | None:
        return next((w - t for w, x in self.cmds if w > t and x == 0.0), None)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _limits() -> SafetyLimits:
    data = yaml.safe_load(SAFETY_YAML.read_text())["safety_monitor"]["ros__parameters"]
    return SafetyLimits.from_mapping(data["limits"])


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _monitor(report_dir: str) -> subprocess.Popen:
    args = ["-m", "vla_pruned_ros.ros.safety_monitor_node", "--ros-args"]
    return _start(args + ["--params-file", str(SAFETY_YAML), "-p", f"report_dir:={report_dir}"])


def _wait_moving(clock: CommandClock, since: float) -> None:
    if not clock.spin_until(lambda: clock.moving_since(since), 60.0):
        raise RuntimeError("the gate never passed the policy's command")
    clock.spin_until(lambda: False, 1.0)  # steady state


def _fault_time(clock: CommandClock, pid: int, sig: signal.Signals) -> float | None:
    """Send `sig` to `pid` and return the seconds until the first zero command after it."""
    t = time.monotonic()
    os.kill(pid, sig)
    clock.spin_until(lambda: clock.first_zero_after(t) is not None, 10.0)
    return clock.first_zero_after(t)


def hand_started(clock: CommandClock, reps: int, tmp: str) -> dict[str, list[float | None]]:
    """Monitor and policy started by hand; each rep a fresh policy process."""
    times: dict[str, list[float | None]] = {"kill": [], "stall": [], "skew": []}
    monitor = _monitor(tmp)
    try:
        for _ in range(reps):
            for case in times:
                policy = _start([str(FAKE_POLICY)])
                _wait_moving(clock, time.monotonic())
                sig = {"kill": signal.SIGKILL, "stall": signal.SIGUSR1, "skew": signal.SIGUSR2}
                times[case].append(_fault_time(clock, policy.pid, sig[case]))
                policy.kill()
                policy.wait()
    finally:
        _stop(monitor)
    return times


def under_vla_ros_up(clock: CommandClock, reps: int, tmp: str) -> list[float | None]:
    """The graph under `vla-ros up` (monitor + policy script); kill -9 the policy."""
    bringup = Path(tmp) / "config" / "bringup.yaml"
    bringup.parent.mkdir(exist_ok=True)
    nodes = [
        {"executable": "safety_monitor_node", "params": [str(SAFETY_YAML)],
         "overrides": {"report_dir": tmp}},
        {"script": str(FAKE_POLICY), "name": "fake_policy"},
    ]  # fmt: skip
    bringup.write_text(yaml.safe_dump({"nodes": nodes}))
    times = []
    for _ in range(reps):
        up = subprocess.Popen(
            [sys.executable, "-m", "vla_pruned_ros.cli.ros_up", "up", str(bringup)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=_collect, args=(up.stdout, lines))
        reader.daemon = True
        reader.start()
        try:
            _wait_moving(clock, time.monotonic())
            line = next(ln for ln in lines if "started fake_policy (pid" in ln)
            pid = int(line.split("(pid ")[1].split(")")[0])
            times.append(_fault_time(clock, pid, signal.SIGKILL))
            up.wait(timeout=60)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    return times


def _collect(stream, lines: list[str]) -> None:
    lines.extend(iter(stream.readline, ""))


def _row(case: str, values: list[float | None], target: float) -> str:
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    med = f"{statistics.median(got):.3f}" if got else "-"
    worst = f"{max(got):.3f}" if got else "-"
    ok = "yes" if got and not missed and max(got) <= target else "no"
    return f"| {case} | {len(values)} | {med} | {worst} | {missed} | {target:.3f} | {ok} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the section into this results file")
    args = parser.parse_args(argv)
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 200))
    use_localhost_profile()
    lim = _limits()
    period = lim.control_period_s
    clock = CommandClock()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            up = under_vla_ros_up(clock, args.reps, tmp)
            hand = hand_started(clock, args.reps, tmp)
    finally:
        clock.close()
    command = f"nice -n 10 .venv/bin/python bench/safety.py --reps {args.reps}"
    lines = [
        SECTION,
        "",
        f"{dt.date.today()}, limits from config/safety_monitor_nav.yaml: control "
        f"{lim.control_rate_hz:g} Hz, command_timeout_s {lim.command_timeout_s:g}, "
        f"camera_timeout_s {lim.camera_timeout_s:g}, clock_skew_tolerance_s "
        f"{lim.clock_skew_tolerance_s:g}. Seconds from the fault to the first zero command "
        "received on `cmd_vel` by a separate subscriber process; a 2-core machine shared with "
        "other jobs.",
        "",
        f"    {command}{' --out ' + str(args.out) if args.out else ''}",
        "",
        "| case | reps | median (s) | max (s) | no zero within 10 s | target (s) | met |",
        "|---|---|---|---|---|---|---|",
        _row("kill -9 policy, under `vla-ros up`", up, lim.command_timeout_s + 2 * period),
        _row("kill -9 policy, hand-started", hand["kill"], lim.command_timeout_s + 2 * period),
        _row("camera stall", hand["stall"], lim.camera_timeout_s + 2 * period),
        _row("camera clock 3 s ahead", hand["skew"], 2 * period),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        _write_section(args.out, text)
    return 0


def _write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of the results file (others' sections stay)."""
    old = path.read_text() if path.is_file() else "# Safety benchmarks\n"
    head, sep, rest = old.partition(SECTION)
    if sep:
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        new = head + section + ("\n" + tail if tail else "")
    else:
        title, _, others = old.partition("\n## ")
        new = title.rstrip() + "\n\n" + section + ("\n## " + others if others else "")
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
