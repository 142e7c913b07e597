"""`vla-ros up BRINGUP.yaml`: start a graph of our nodes as separate processes and supervise it.

`ros2 launch` is not installable here, so this starts the same executables with the same
parameter files the launch files use. Each node's output is prefixed with its name.

The gate is the last thing to stop. One rule marks it: a node's `role` is `safety` if the bringup
says so (`role: safety`), and by default for the `safety_monitor_node` executable; every other node
has role `node`. If a node exits on its own (a crash, `kill -9`), the supervisor reports which
node and why (exit code or signal name), stops every other node with SIGINT, keeps the safety
node running long enough to publish zero commands (its command timeout plus three control
periods, read from its parameters: it sends zeros on `stale_command` / `policy_lost`), and only
then stops it; it publishes one more zero as it exits. Ctrl-C, SIGTERM, the duration, or the
clean end of an `ends_graph` node stop the graph the same way, safety node last, without the
wait. Each stop is SIGINT first, so each node saves its state, then SIGKILL after a grace period.

Exit codes: 0 a normal end (signal, duration, an `ends_graph` node finished), 1 a node died,
2 a bringup file that cannot be started.

The bringup file's format is described in `vla_pruned_ros/bringup.py`, which reads it for
both `vla-ros up` and the launch files.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from vla_pruned_ros.bringup import (  # noqa: F401 (re-exports)
    BAG_PLAYER_EXECUTABLE,
    ROLES,
    SAFETY_EXECUTABLE,
    BringupError,
    NodeSpec,
    apply_overrides,
    entry_modules,
    load_bringup,
)
from vla_pruned_ros.cli.adapter_args import adapter_parameters, add_adapter_arguments
from vla_pruned_ros.ros.dds import use_localhost_profile
from vla_pruned_ros.sim.registry import TASKS

GRACE_S = 8.0
# How long `vla-ros replay`'s player waits for every input's subscriber before it plays: the
# policy subscribes only once its model has loaded, which for a checkpoint on a loaded machine
# took over a minute (a 20 s wait played the whole bag to a policy still loading). The player
# starts as soon as all have subscribed, so a long wait costs nothing when loading is quick.
REPLAY_WAIT_S = 180.0
# The bringup file's reader lives in vla_pruned_ros/bringup.py, shared with the launch files;
# re-exported here for callers of `vla_pruned_ros.cli.ros_up`.
__all__ = ["BringupError", "NodeSpec", "entry_modules", "load_bringup", "run_graph"]


def command_for(spec: NodeSpec, modules: dict[str, str]) -> list[str]:
    if spec.script is not None:
        cmd = [sys.executable, "-u", str(spec.script), "--ros-args"]
    else:
        cmd = [sys.executable, "-u", "-m", modules[spec.executable], "--ros-args"]
    for p in spec.params:
        cmd += ["--params-file", str(p)]
    for key, value in spec.overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        cmd += ["-p", f"{key}:={text}"]
    return cmd


def safety_hold_s(spec: NodeSpec) -> float:
    """How long the safety node keeps running after another node died: until it has sent zero
    commands for at least two control periods beyond its command (or policy) timeout. Read from
    the same parameter files and overrides the node gets; SafetyLimits' defaults otherwise."""
    from vla_pruned_ros.monitor.limits import SafetyLimits

    limits: dict[str, object] = {}
    for path in spec.params:
        data = yaml.safe_load(path.read_text()) or {}
        for key in ("/**", spec.name, f"/{spec.name}", "safety_monitor", "/safety_monitor"):
            section = ((data.get(key) or {}).get("ros__parameters") or {}).get("limits") or {}
            limits.update(section)
    for key, value in spec.overrides.items():
        if key.startswith("limits."):
            limits[key.removeprefix("limits.")] = value
    default = SafetyLimits()
    rate = float(limits.get("control_rate_hz", default.control_rate_hz))
    timeouts = [
        float(limits.get(name, getattr(default, name)))
        for name in ("command_timeout_s", "policy_timeout_s")
    ]
    enabled = [t for t in timeouts if t > 0]
    return (min(enabled) if enabled else 0.0) + 3.0 / rate


def describe_exit(returncode: int) -> str:
    """An exit status in words: a signal by its name (`kill -9` is SIGKILL), else the code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _pump(name: str, stream, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"[{name}] {line}")
        out.flush()


def run_graph(specs: list[NodeSpec], duration_s: float = 0.0, out=sys.stdout) -> int:
    """Start every node, wait for a signal, the duration, or a node's exit; stop them all."""
    modules = entry_modules()
    stop = threading.Event()
    reason = {"text": "", "code": 0}

    def on_signal(signum: int, _frame: object) -> None:
        reason["text"] = signal.Signals(signum).name
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: dict[str, subprocess.Popen] = {}
    died: NodeSpec | None = None
    try:
        for spec in specs:
            proc = subprocess.Popen(
                command_for(spec, modules),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # our Ctrl-C reaches them only through us
            )
            procs[spec.name] = proc
            threading.Thread(target=_pump, args=(spec.name, proc.stdout, out), daemon=True).start()
            out.write(f"[vla-ros] started {spec.name} (pid {proc.pid})\n")
        deadline = time.monotonic() + duration_s if duration_s > 0 else None
        while not stop.is_set():
            for spec in specs:
                proc = procs[spec.name]
                if proc.poll() is not None:
                    done = spec.ends_graph and proc.returncode == 0
                    if done:
                        text = f"{spec.name} finished with code 0"
                    else:
                        died = spec
                        text = f"{spec.name} died: {describe_exit(proc.returncode)}"
                        out.write(f"[vla-ros] {text}\n")
                    reason.update(text=text, code=0 if done else 1)
                    stop.set()
                    break
            if deadline is not None and time.monotonic() >= deadline:
                reason["text"] = f"duration {duration_s:g} s reached"
                stop.set()
            stop.wait(0.2)
    finally:
        _stop_graph(specs, procs, out, died)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.write(f"[vla-ros] stopped: {reason['text']}\n")
    return reason["code"]


def _stop_graph(
    specs: list[NodeSpec], procs: dict[str, subprocess.Popen], out, died: NodeSpec | None
) -> None:
    """Stop every node, the safety nodes last; after a death, first let them send zeros."""
    t0 = time.monotonic()
    started = [s for s in specs if s.name in procs]
    _stop_all({s.name: procs[s.name] for s in started if not s.is_safety}, out)
    gates = {s.name: procs[s.name] for s in started if s.is_safety}
    if died is not None and not died.is_safety:
        for spec in (s for s in started if s.is_safety and procs[s.name].poll() is None):
            hold = safety_hold_s(spec)
            out.write(f"[vla-ros] {spec.name} keeps the robot stopped for {hold:.2f} s\n")
            time.sleep(max(0.0, t0 + hold - time.monotonic()))
    _stop_all(gates, out)


def _stop_all(procs: dict[str, subprocess.Popen], out) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.write(f"[vla-ros] {name} ignored SIGINT for {GRACE_S:g} s; killing it\n")
            proc.kill()
            proc.wait()


def demo(tasks: list[str], episodes: int, artifact: str, report_dir: Path,
         policy: dict[str, object] | None = None) -> int:  # fmt: skip
    """The main job: each task's bringup (simulation + policy + safety monitor over DDS) for a
    few episodes, then one summary of success and violations and where the reports are.
    `policy`: more policy node parameters (the adapter flags, `adapter_parameters`)."""
    from vla_pruned_ros.paths import package_file

    rows = []
    for task in tasks:
        specs, _ = load_bringup(package_file(f"config/bringup_{task}.yaml"))
        out = report_dir / task
        for spec in specs:
            if spec.executable == "sim_node":
                spec.overrides.update(episodes=episodes, report_dir=str(out))
            if spec.executable == SAFETY_EXECUTABLE:
                spec.overrides["report_dir"] = str(out)
            if spec.executable == "policy_node":
                spec.overrides.update(artifact=artifact, **(policy or {}))
        print(f"[vla-ros] {task}: simulation + policy ({artifact}) + safety monitor, "
              f"{episodes} episodes")  # fmt: skip
        code = run_graph(specs, out=_Quiet(sys.stdout))
        if code != 0:
            return code
        rows.append((task, out))
    print("\n| task | episodes | success | unsafe episodes | monitor violations | reports |")
    print("|---|---|---|---|---|---|")
    for task, out in rows:
        sim = yaml.safe_load((out / f"sim_{task}.json").read_text())
        safety = yaml.safe_load((out / "safety.json").read_text())
        n = sim["summary"]["episodes"]
        ok = sum(e["success"] for e in sim["episodes"])
        unsafe = sum(e["unsafe"] for e in sim["episodes"])
        counts = {k: v for k, v in safety["summary"]["violations"].items() if v}
        print(f"| {task} | {n} | {ok}/{n} | {unsafe}/{n} | {counts or 'none'} | {out} |")
    return 0


def replay(bag: Path, task: str, artifact: str, rate: float, report_dir: Path,
           policy: dict[str, object] | None = None) -> int:  # fmt: skip
    """A recorded bag's inputs through the live policy and safety monitor on the bag's clock;
    then the monitor's per-category violation counts (recorded ones and the policy's own).
    `policy`: more policy node parameters (the adapter flags, `adapter_parameters`)."""
    from vla_pruned_ros.paths import package_file

    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    specs, _ = load_bringup(package_file(f"config/bringup_replay_{task}.yaml"))
    for spec in specs:
        if spec.executable == BAG_PLAYER_EXECUTABLE:
            spec.overrides.update(bag=str(bag.resolve()), rate=rate,
                                  wait_for_subscribers_s=REPLAY_WAIT_S)  # fmt: skip
        if spec.executable == SAFETY_EXECUTABLE:
            spec.overrides["report_dir"] = str(report_dir)
        if spec.executable == "policy_node":
            spec.overrides.update(artifact=artifact, **(policy or {}))
    print(f"[vla-ros] replay {bag} ({task}) through policy ({artifact}) + safety monitor")
    code = run_graph(specs, out=_Quiet(sys.stdout))
    report = report_dir / "safety.json"
    if not report.is_file():
        print(f"vla-ros: the monitor wrote no report ({report})", file=sys.stderr)
        return code or 1
    safety = yaml.safe_load(report.read_text())
    counts = {k: v for k, v in safety["summary"]["violations"].items() if v}
    print(f"monitor violations: {counts or 'none'}; report {report}")
    return code


class _Quiet:
    """Node output minus the per-message chatter; episode results and errors stay visible."""

    KEEP = (
        "episode",
        "ERROR",
        "error",
        "Traceback",
        "report",
        "results",
        "[vla-ros]",
        "action_map",
    )  # the policy node's hint when a model's actions drive no velocity

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if any(k in text for k in self.KEEP):
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla-ros", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start and supervise a graph from a bringup YAML")
    up.add_argument("bringup", type=Path)
    up.add_argument("--artifact", help="the policy node's artifact (default: as the file says)")
    add_adapter_arguments(up)
    up.add_argument("--duration", type=float, help="stop after this many seconds")
    up.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for the graph")
    up.add_argument(
        "--system-dds",
        action="store_true",
        help="keep the environment's DDS settings (default: single-host profile, see ros/dds.py)",
    )
    run = sub.add_parser("demo", help="the main job: both tasks in simulation, then a summary")
    run.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    run.add_argument("--episodes", type=int, default=3)
    run.add_argument("--artifact", default="embedded")
    run.add_argument("--reports", type=Path, default=Path("reports/run"))
    add_adapter_arguments(run)
    rep = sub.add_parser("replay", help="a bag's inputs through the live policy and monitor")
    rep.add_argument("bag", type=Path)
    rep.add_argument("--task", choices=TASKS, required=True)
    rep.add_argument("--artifact", default="embedded")
    rep.add_argument("--rate", type=float, default=1.0)
    rep.add_argument("--reports", type=Path, default=Path("reports/replay"))
    add_adapter_arguments(rep)
    args = parser.parse_args(argv)
    try:
        policy = adapter_parameters(args)
    except (OSError, ValueError) as err:
        print(f"vla-ros: {err}", file=sys.stderr)
        return 2
    if args.command == "replay":
        use_localhost_profile()
        try:
            return replay(args.bag, args.task, args.artifact, args.rate, args.reports, policy)
        except (BringupError, FileNotFoundError) as err:
            print(f"vla-ros: {err}", file=sys.stderr)
            return 2
    if args.command == "demo":
        use_localhost_profile()
        try:
            return demo(args.tasks, args.episodes, args.artifact, args.reports, policy)
        except (BringupError, FileNotFoundError) as err:
            print(f"vla-ros: {err}", file=sys.stderr)
            return 2
    try:
        specs, duration = load_bringup(args.bringup)
    except (BringupError, yaml.YAMLError) as err:
        print(f"vla-ros: {err}", file=sys.stderr)
        return 2
    if args.artifact:  # a command-line path: relative to the working directory
        policy["artifact"] = str(Path(args.artifact).expanduser().resolve())
    apply_overrides(specs, {"policy_node": policy})
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    if not args.system_dds:
        use_localhost_profile()
    return run_graph(specs, args.duration if args.duration is not None else duration)


if __name__ == "__main__":
    sys.exit(main())
