"""Offline bag replay: feed a recording's frames and instructions straight to one or more models
(no DDS, as fast as the models run) and compare their actions with what was recorded and with a
reference model (normally the dense one), so a compressed policy is checked on real logs before it
touches hardware.

Each recorded `VLAAction` carries the stamp of the frame it was computed from; that pairing gives
(frame, instruction, recorded action) steps. The commands each model would have sent go through
the safety monitor's command checks (speed, acceleration, validity) with the robot's limits.

The bag is read through the one reader (`bags/reader.py`, no rclpy): a corrupt chunk refuses the
bag; a cut file is evaluated up to its last whole message with `error` saying where it broke;
stamps that go backwards are sorted back into place within `REORDER_WINDOW_S` (never across an
episode boundary) and, with gaps longer than `GAP_S`, listed under `stamps` in the result.
Frames are run through each model in batches (`models/batch.py`) where the adapter allows it.
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

from vla_pruned_ros import topic_names as topics
from vla_pruned_ros.bags.reader import (
    GAP_S,
    BagError,
    BagReader,
    CorruptChunk,
    ReadReport,
    reorder_by_stamp,
)
from vla_pruned_ros.frames import ImageRejected, decode_image
from vla_pruned_ros.monitor import categories as cat
from vla_pruned_ros.monitor.limits import TASK_SAFETY_CONFIG as SAFETY_CONFIG
from vla_pruned_ros.monitor.velocity import action_to_velocity

COMMAND_CATEGORIES = (cat.SPEED, cat.ACCELERATION, cat.INVALID_ACTION)
ACTION_SPACE_TASK = {"base_velocity": "nav", "ee_velocity": "manip"}
REORDER_WINDOW_S = 1.0  # steps up to this late are put back in stamp order
# Frames per model call where the adapter takes batches. Measured (one pinned core, one thread,
# CPU ms per frame, median of 4 interleaved rounds, embedded VLA): 1: 3.77, 8: 1.29, 16: 1.20,
# 32: 1.14, 64: 1.13, 128: 1.51; 32 keeps the batch small for short bags at no cost.
BATCH = 32
FRAME_BUFFER = 256  # frames kept waiting for the action computed from them


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
    report: ReadReport = field(default_factory=ReadReport)  # the reader's: stamps, CRCs, cut
    late_steps: list[dict[str, float | str]] = field(default_factory=list)  # not sortable


def _stamp_s(stamp_ns: int) -> float:
    return stamp_ns / 1e9


def _paired_steps(
    reader: BagReader, stats: ReadStats, camera: str, instruction: str, action: str,
    episode: str,
) -> Iterator[BagStep]:  # fmt: skip
    """Steps in file order: each recorded action with the frame of the same stamp."""
    frames: OrderedDict[int, Any] = OrderedDict()
    current_instruction, current_episode = "", "0"
    wanted = [t for t in (camera, instruction, action, episode) if t in reader.topics]
    for index, rec in enumerate(reader.records(wanted), start=1):
        msg = rec.message
        if rec.topic == camera:
            stats.frames += 1
            frames[rec.stamp_ns] = msg  # decoded to RGB only once an action names it
            while len(frames) > FRAME_BUFFER:
                frames.popitem(last=False)
        elif rec.topic == instruction:
            current_instruction = msg.data
        elif rec.topic == episode:
            parts = msg.data.split(maxsplit=1)
            if parts and parts[0] == "start":
                current_episode = parts[1] if len(parts) > 1 else str(index)
        elif rec.topic == action:
            stats.actions += 1
            frame = frames.get(rec.stamp_ns)
            if frame is None:
                stats.unmatched_actions += 1
                continue
            try:
                image = decode_image(frame.encoding, frame.height, frame.width, frame.step,
                                     frame.data)  # fmt: skip
            except ImageRejected as err:
                stats.errors.append(f"frame at {_stamp_s(rec.stamp_ns):.3f} s rejected: {err}")
                stats.frames -= 1
                continue
            yield BagStep(
                current_episode, msg.instruction or current_instruction,
                _stamp_s(rec.stamp_ns), image, np.asarray(msg.action, np.float64),
                tuple(msg.names), msg.action_space,
            )  # fmt: skip


def read_steps(
    bag: Path,
    stats: ReadStats,
    camera: str = topics.CAMERA,
    instruction: str = topics.INSTRUCTION,
    action: str = topics.ACTION,
    episode: str = topics.EPISODE,
    reorder_window_s: float = REORDER_WINDOW_S,
    gap_s: float = GAP_S,
) -> Iterator[BagStep]:
    """Steps in stamp order within each episode (sorted back within `reorder_window_s`; later
    ones are evaluated where they arrived and listed in `stats.late_steps`). Raises BagError on
    a missing topic, an undecodable type or a corrupt chunk; a cut file ends the steps with
    `stats.report.truncated` set."""
    reader = BagReader(bag, gap_s=gap_s)
    try:
        camera, action = reader.require(camera, action)
        instruction, episode = topics.absolute(instruction), topics.absolute(episode)
        from vla_pruned_ros.bags.types import UnknownMessageType, typestore

        store = typestore()
        for topic in (camera, instruction, action, episode):
            info = reader.topics.get(topic)
            if info is not None and info.msgtype not in store.types:
                raise BagError(f"{bag}: topic {topic}: " + str(UnknownMessageType(
                    f"cannot import message type {info.msgtype!r}: not a ROS 2 Kilted or "
                    "vla_pruned_ros_msgs type")))  # fmt: skip

        def late(step: BagStep, released: float) -> None:
            stats.late_steps.append({"episode": step.episode, "stamp": step.stamp,
                                     "after": released})  # fmt: skip

        steps = _paired_steps(reader, stats, camera, instruction, action, episode)
        yield from reorder_by_stamp(steps, lambda s: s.stamp, reorder_window_s, late,
                                    barrier=lambda s: s.episode)  # fmt: skip
        stats.report = reader.report
    finally:
        stats.report = reader.report
        reader.close()


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
    predict: Callable[[list[np.ndarray], list[str]], np.ndarray]  # a batch of frames
    info: dict[str, Any]
    checker: CommandChecker
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(steps: Iterator[BagStep], size: int) -> Iterator[list[BagStep]]:
    batch: list[BagStep] = []
    for step in steps:
        batch.append(step)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate_bag(
    bag: Path,
    models: list[str],
    task: str | None = None,
    reference: str | None = None,
    progress: bool = True,
    loader: Callable[[str, str], Any] | None = None,
    batch: int = BATCH,
    reorder_window_s: float = REORDER_WINDOW_S,
    gap_s: float = GAP_S,
) -> dict[str, Any]:
    """Replay `bag` through every model. The reference (default: the first model) is what
    'faithfulness' is measured against. A corrupt chunk, a missing topic or an unknown type
    raise BagError; a bag that breaks off is evaluated up to the break and returned with
    `error` set; stamp disorder and gaps are reported under `stamps`. `batch` frames go through
    a model at once where its adapter allows (1: frame by frame, as a live node runs)."""
    from tqdm import tqdm

    from vla_pruned_ros.models.batch import predict_batch, reuse_freed_memory

    if not models:
        raise ValueError("give at least one model")
    reuse_freed_memory()  # the batches' feature maps are not faulted in afresh each time
    if loader is None:
        loader = replay_loader({})
    from vla_pruned_ros.models.action_map import check_action_space

    reference = reference or models[0]
    names = list(dict.fromkeys([*models, reference]))
    stats = ReadStats()
    steps = read_steps(bag, stats, reorder_window_s=reorder_window_s, gap_s=gap_s)
    runs: dict[str, ModelRun] = {}
    recorded_checker = None
    error = None
    bag_start = bag_end = None
    bar = tqdm(desc=f"replay {bag.name}", unit="step", disable=not progress)
    try:
        for chunk in _batches(steps, max(1, batch)):
            if not runs:
                first = chunk[0]
                task = task or ACTION_SPACE_TASK.get(first.action_space)
                if task is None:
                    raise ValueError(f"cannot tell the task from action space "
                                     f"{first.action_space!r}; pass --task")  # fmt: skip
                for name in names:
                    policy = loader(name, task)
                    check_action_space(policy.info, first.names, first.action_space,
                                       f"bag {bag.name}")  # fmt: skip
                    runs[name] = ModelRun(name, lambda ims, ins, p=policy: predict_batch(
                        p, ims, ins), {
                        "variant": policy.info.variant, "rank": policy.info.rank,
                        "memory_bytes": policy.info.memory_bytes,
                    }, CommandChecker(task))  # fmt: skip
                recorded_checker = CommandChecker(task)
            images = [s.image for s in chunk]
            texts = [s.instruction for s in chunk]
            preds = {}
            for run in runs.values():
                t0 = time.perf_counter()
                preds[run.name] = np.asarray(run.predict(images, texts), np.float64)
                run.seconds += time.perf_counter() - t0
            for i, step in enumerate(chunk):
                bag_start = step.stamp if bag_start is None else min(bag_start, step.stamp)
                bag_end = step.stamp if bag_end is None else max(bag_end, step.stamp)
                recorded_checker.check(step, step.recorded)
                for run in runs.values():
                    pred = preds[run.name][i]
                    row = {"episode": step.episode, "stamp": step.stamp,
                           **_compare(pred, step.recorded)}  # fmt: skip
                    ref = _compare(pred, preds[reference][i])
                    row.update({f"ref_{k}": v for k, v in ref.items()})
                    row["violations"] = run.checker.check(step, pred)
                    run.steps.append(row)
            bar.update(len(chunk))
    except CorruptChunk:
        raise
    except BagError as err:
        error = str(err)
    finally:
        bar.close()
    if stats.report.truncated and error is None:
        error = f"{bag}: the bag is truncated or corrupt: {stats.report.truncated}"
    if not runs:
        if error:
            raise BagError(error)
        raise BagError(f"{bag}: no recorded action could be paired with its camera frame")
    return _result(bag, task, reference, runs, recorded_checker, stats, error,
                   (bag_end or 0) - (bag_start or 0))  # fmt: skip


def replay_loader(loader_kwargs: dict[str, Any]) -> Callable[[str, str], Any]:
    """How replay loads a model: `load_policy` with the adapter arguments, and the on-disk
    instruction-feature cache (`models.instruction_cache`, `$VLA_INSTRUCTION_CACHE`), so a
    replay whose instructions were seen before starts without loading MiniLM and gives
    the same actions as one that computes them."""
    from vla_pruned_ros.models.instruction_cache import InstructionCache
    from vla_pruned_ros.models.registry import load_policy

    cache = InstructionCache.from_environment()

    def load(name: str, task: str) -> Any:
        return load_policy(name, task, instruction_cache=cache, **loader_kwargs)

    return load


def _stamps(stats: ReadStats) -> dict[str, Any]:
    """Stamp disorder and silences the reader found, and what sorting could not mend."""
    report = stats.report
    return {
        "out_of_order": [vars(i) for i in report.out_of_order],
        "gaps": [{**vars(g), "seconds": g.seconds} for g in report.gaps],
        "late_steps": stats.late_steps,
        "crc_checked_chunks": report.crc_checked_chunks,
        "crc_unchecked_chunks": report.crc_unchecked_chunks,
        "truncated": report.truncated,
    }


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
        "stamps": _stamps(stats),
        "error": error,
    }
