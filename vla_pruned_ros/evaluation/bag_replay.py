"""Offline bag replay: feed a recording's frames and instructions straight to one or more models
(no DDS, as fast as the models run) and compare their actions with what was recorded and with a
reference model (normally the dense one), so a compressed policy is checked on real logs before it
touches hardware.

Each recorded `VLAAction` carries the stamp of the frame it was computed from; that pairing gives
(frame, instruction, recorded action) steps. The commands each model would have sent go through
the safety monitor's command checks (speed, acceleration, validity) with the robot's limits.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_pruned_ros.bags.play import BagError, open_reader
from vla_pruned_ros.monitor import categories as cat
from vla_pruned_ros.monitor.limits import TASK_SAFETY_CONFIG as SAFETY_CONFIG
from vla_pruned_ros.monitor.velocity import action_to_velocity
from vla_pruned_ros.ros import topics

COMMAND_CATEGORIES = (cat.SPEED, cat.ACCELERATION, cat.INVALID_ACTION)
ACTION_SPACE_TASK = {"base_velocity": "nav", "ee_velocity": "manip"}


@dataclass
class BagStep:
    episode: str
    instruction: str
    stamp: float  # of the frame (and of the recorded action)
    image: np.ndarray  # RGB uint8
    recorded: np.ndarray  # the recorded action
    names: tuple[str, ...]
    action_space: str


@dataclass
class ReadStats:
    frames: int = 0
    actions: int = 0
    unmatched_actions: int = 0  # actions whose frame was not in the bag (dropped in recording)
    errors: list[str] = field(default_factory=list)


def _topic(name: str) -> str:
    return name if name.startswith("/") else f"/{name}"


def _open_messages(
    bag: Path, wanted: set[str]
) -> tuple[dict[str, str], Iterator[tuple[str, bytes]], str | None]:
    """(topic -> type, the wanted topics' messages in order, a problem to raise once they are
    consumed). A truncated MCAP bag is salvaged up to where it breaks off."""
    from vla_pruned_ros.bags.mcap_salvage import Truncated, salvage

    try:
        reader = open_reader(bag)
    except BagError as err:
        files = sorted(bag.glob("*.mcap")) if bag.is_dir() else [bag]
        salvaged, problem = [], None
        for f in files:
            if f.suffix != ".mcap" or not f.is_file():
                continue
            try:
                salvaged.extend(salvage(f))
            except Truncated as cut:
                problem = f"{bag}: the bag is truncated or corrupt: {f.name}: {cut}"
            except (ValueError, OSError, IndexError):
                raise err from None
        if problem is None:
            raise err from None
        types = {m.topic: m.msgtype for m in salvaged}
        return types, ((m.topic, m.data) for m in salvaged if m.topic in wanted), problem

    types = {c.topic: c.msgtype for c in reader.connections}

    def stream() -> Iterator[tuple[str, bytes]]:
        try:
            messages = reader.messages([c for c in reader.connections if c.topic in wanted])
            index = 0
            while True:
                try:
                    conn, _t, raw = next(messages)
                except StopIteration:
                    return
                except Exception as err:  # noqa: BLE001 - storage plugins raise many kinds
                    raise BagError(
                        f"{bag}: the bag is truncated or corrupt after message {index}: {err}"
                    ) from None
                index += 1
                yield conn.topic, raw
        finally:
            reader.close()

    return types, stream(), None


def read_steps(
    bag: Path,
    stats: ReadStats,
    camera: str = topics.CAMERA,
    instruction: str = topics.INSTRUCTION,
    action: str = topics.ACTION,
    episode: str = topics.EPISODE,
) -> Iterator[BagStep]:
    """Steps in recording order. Raises BagError on a missing topic, an unknown type, stamps
    that go backwards or a bag that breaks off; the steps before the problem are yielded."""
    from rclpy.serialization import deserialize_message

    from vla_pruned_ros.bags.types import UnknownMessageType, rclpy_class
    from vla_pruned_ros.ros.conversions import stamp_to_sec
    from vla_pruned_ros.ros.image_io import ImageRejected, image_to_rgb

    camera, instruction, action, episode = map(_topic, (camera, instruction, action, episode))
    types, messages, problem = _open_messages(bag, {camera, instruction, action, episode})
    missing = [t for t in (camera, action) if t not in types]
    if missing:
        raise BagError(f"{bag}: missing topics {missing}; the bag has {sorted(types)}")
    classes = {}
    for topic in (camera, instruction, action, episode):
        if topic in types:
            try:
                classes[topic] = rclpy_class(types[topic])
            except UnknownMessageType as err:
                raise BagError(f"{bag}: topic {topic}: {err}") from None
    frames: OrderedDict[int, np.ndarray] = OrderedDict()
    current_instruction, current_episode = "", "0"
    last_frame_stamp = -math.inf
    for index, (topic, raw) in enumerate(messages, start=1):
        msg = deserialize_message(bytes(raw), classes[topic])
        if topic == camera:
            stamp = stamp_to_sec(msg.header.stamp)
            if stamp < last_frame_stamp:
                raise BagError(
                    f"{bag}: out-of-order stamps on {topic}: {stamp:.3f} s after "
                    f"{last_frame_stamp:.3f} s (message {index})"
                )
            last_frame_stamp = stamp
            try:
                frames[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = image_to_rgb(msg)
            except ImageRejected as err:
                stats.errors.append(f"frame at {stamp:.3f} s rejected: {err}")
                continue
            stats.frames += 1
            while len(frames) > 256:
                frames.popitem(last=False)
        elif topic == instruction:
            current_instruction = msg.data
        elif topic == episode:
            parts = msg.data.split(maxsplit=1)
            if parts and parts[0] == "start":
                current_episode = parts[1] if len(parts) > 1 else str(index)
        elif topic == action:
            stats.actions += 1
            image = frames.get(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
            if image is None:
                stats.unmatched_actions += 1
                continue
            yield BagStep(
                current_episode, msg.instruction or current_instruction,
                stamp_to_sec(msg.header.stamp), image,
                np.asarray(msg.action, np.float64), tuple(msg.names), msg.action_space,
            )  # fmt: skip
    if problem:
        raise BagError(problem)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-9 and nb < 1e-9:
        return 1.0
    if na < 1e-9 or nb < 1e-9:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _compare(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {
        "mse": float(np.mean((pred - target) ** 2)),
        "cosine": _cosine(pred, target),
        "direction_agrees": float(_cosine(pred, target) > 0),
    }


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else math.nan


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    return {
        "mse": _mean(rows, "mse"),
        "cosine": _mean(rows, "cosine"),
        "direction_agreement": _mean(rows, "direction_agrees"),
    }


class CommandChecker:
    """The monitor's command checks for one stream of commands, counted per episode."""

    def __init__(self, task: str) -> None:
        from vla_pruned_ros.monitor.gate import SafetyMonitor
        from vla_pruned_ros.monitor.limits import SafetyLimits
        from vla_pruned_ros.params_file import read_ros_params
        from vla_pruned_ros.paths import package_file

        params = read_ros_params(package_file(SAFETY_CONFIG[task]), "safety_monitor")
        self.monitor = SafetyMonitor(SafetyLimits.from_mapping(params.get("limits", {})))
        self.episode = None
        self.counts: dict[str, dict[str, int]] = {}

    def check(self, step: BagStep, action: np.ndarray) -> list[str]:
        if step.episode != self.episode:
            self.monitor.start_episode(step.episode, step.stamp)
            self.episode = step.episode
        linear, angular = action_to_velocity(step.names, action)
        if not np.all(np.isfinite(action)):
            linear = [math.nan]
        self.monitor.on_command(linear, angular, step.stamp)
        found = [e.category for e in self.monitor.pop_events() if e.category in
                 COMMAND_CATEGORIES]  # fmt: skip
        per = self.counts.setdefault(step.episode, {})
        for c in found:
            per[c] = per.get(c, 0) + 1
        return found


@dataclass
class ModelRun:
    name: str
    predict: Callable[[np.ndarray, str], np.ndarray]
    info: dict[str, Any]
    checker: CommandChecker
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def evaluate_bag(
    bag: Path,
    models: list[str],
    task: str | None = None,
    reference: str | None = None,
    progress: bool = True,
    loader: Callable[[str, str], Any] | None = None,
) -> dict[str, Any]:
    """Replay `bag` through every model. The reference (default: the first model) is what
    'faithfulness' is measured against. Problems in the bag end the replay early; what was
    gathered is returned with `error` set."""
    from tqdm import tqdm

    if not models:
        raise ValueError("give at least one model")
    if loader is None:
        from vla_pruned_ros.models.registry import load_policy as loader
    from vla_pruned_ros.models.action_map import check_action_space

    reference = reference or models[0]
    names = list(dict.fromkeys([*models, reference]))
    stats = ReadStats()
    steps = read_steps(bag, stats)
    runs: dict[str, ModelRun] = {}
    recorded_checker = None
    error = None
    bag_start = bag_end = None
    bar = tqdm(desc=f"replay {bag.name}", unit="step", disable=not progress)
    try:
        for step in steps:
            if not runs:
                task = task or ACTION_SPACE_TASK.get(step.action_space)
                if task is None:
                    raise ValueError(f"cannot tell the task from action space "
                                     f"{step.action_space!r}; pass --task")  # fmt: skip
                for name in names:
                    policy = loader(name, task)
                    check_action_space(policy.info, step.names, step.action_space,
                                       f"bag {bag.name}")  # fmt: skip
                    runs[name] = ModelRun(name, policy.predict, {
                        "variant": policy.info.variant, "rank": policy.info.rank,
                        "memory_bytes": policy.info.memory_bytes,
                    }, CommandChecker(task))  # fmt: skip
                recorded_checker = CommandChecker(task)
            bag_start = step.stamp if bag_start is None else bag_start
            bag_end = step.stamp
            recorded_checker.check(step, step.recorded)
            preds = {}
            for run in runs.values():
                t0 = time.perf_counter()
                preds[run.name] = np.asarray(run.predict(step.image, step.instruction), np.float64)
                run.seconds += time.perf_counter() - t0
            for run in runs.values():
                pred = preds[run.name]
                row = {"episode": step.episode, "stamp": step.stamp,
                       **_compare(pred, step.recorded)}  # fmt: skip
                ref = _compare(pred, preds[reference])
                row.update({f"ref_{k}": v for k, v in ref.items()})
                row["violations"] = run.checker.check(step, pred)
                run.steps.append(row)
            bar.update(1)
    except BagError as err:
        error = str(err)
    finally:
        bar.close()
    if not runs:
        if error:
            raise BagError(error)
        raise BagError(f"{bag}: no recorded action could be paired with its camera frame")
    return _result(bag, task, reference, runs, recorded_checker, stats, error,
                   (bag_end or 0) - (bag_start or 0))  # fmt: skip


def _result(bag, task, reference, runs, recorded_checker, stats, error, span) -> dict[str, Any]:
    out_models = {}
    for run in runs.values():
        episodes = {}
        for row in run.steps:
            episodes.setdefault(row["episode"], []).append(row)
        violations: dict[str, int] = {}
        for row in run.steps:
            for c in row["violations"]:
                violations[c] = violations.get(c, 0) + 1
        out_models[run.name] = {
            **run.info,
            "steps": len(run.steps),
            "vs_recorded": _summary(run.steps),
            "vs_reference": {
                "mse": _mean(run.steps, "ref_mse"),
                "cosine": _mean(run.steps, "ref_cosine"),
                "direction_agreement": _mean(run.steps, "ref_direction_agrees"),
            },
            "command_violations": violations,
            "per_episode": [
                {
                    "episode": ep,
                    "steps": len(rows),
                    **_summary(rows),
                    "violations": sum(len(r["violations"]) for r in rows),
                }
                for ep, rows in episodes.items()
            ],  # fmt: skip
            "model_seconds": run.seconds,
            "realtime_factor": span / run.seconds if run.seconds > 0 else math.inf,
            "per_step": [
                {k: row[k] for k in ("episode", "stamp", "mse", "ref_mse", "violations")}
                for row in run.steps
            ],
        }
    recorded = {}
    for per in recorded_checker.counts.values():
        for c, n in per.items():
            recorded[c] = recorded.get(c, 0) + n
    return {
        "bag": str(bag),
        "task": task,
        "reference": reference,
        "frames": stats.frames,
        "recorded_actions": stats.actions,
        "unmatched_actions": stats.unmatched_actions,
        "bag_seconds": span,
        "recorded_command_violations": recorded,
        "models": out_models,
        "warnings": stats.errors,
        "error": error,
    }
