"""Closed-loop episodes: a policy drives a MuJoCo task from camera frames and an instruction.

Episodes run in shards of `Parallel.shard_episodes` through `evaluation.parallel` (in this process
or as Ray tasks; one model and one renderer kept per worker process); each returns a plain record
(the task's metrics plus per-step latencies), which `stats.summarize` aggregates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_pruned_ros.evaluation.parallel import CellOutcome, OnCell, Parallel, Work, run, task_device
from vla_pruned_ros.sim.instructions import CALIBRATION_SEED_START, HELD_OUT_SEED_START


@dataclass(frozen=True)
class EvalJob:
    task: str
    model: str  # "embedded" or a model / artifact folder
    seed: int
    phrasing: str = "train"
    supersample: int | None = None  # the camera's supersampling (None: the simulator's)
    action_gain: float | None = None  # overrides the model's calibrated gain (None: keep it)
    gate: str = "none"  # the safety gate in the loop: "none", "stop" or "direction" (gated_loop)
    adapter: str = "embedded"  # load_policy's adapter (cli/adapter_args.py)
    adapter_options: tuple[tuple[str, Any], ...] = ()  # its options, as sorted (key, value) pairs
    mode: str | None = None  # runtime mode (None: the loader's default)
    device: str | None = None  # None: 'cuda' in a Ray task given a GPU, else the loader's default

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.adapter_options)


def adapter_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    """EvalJob's adapter fields from load_policy keyword arguments (`adapter_kwargs(args)`)."""
    rest = dict(kwargs)
    adapter = rest.pop("adapter", "embedded") or "embedded"
    return {"adapter": adapter, "adapter_options": tuple(sorted(rest.items()))}


def shared_model(model: str) -> str:
    """A model folder as an absolute path: the same folder for every worker, whatever its
    working directory (on a cluster the folder must be on storage every node mounts)."""
    if model in ("", "embedded"):
        return model
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def heldout_seeds(first: int, count: int) -> list[int]:
    """Evaluation scenes: never used for training data (seeds >= HELD_OUT_SEED_START)."""
    return [HELD_OUT_SEED_START + first + i for i in range(count)]


def calibration_seeds(first: int, count: int) -> list[int]:
    """Scenes for tuning inference-time settings: training distribution, never trained on."""
    return [CALIBRATION_SEED_START + first + i for i in range(count)]


def check_task_actions(info: Any, task: str) -> None:
    """Refuse a policy (its PolicyInfo) whose actions are not the task's, naming both spaces and
    the `action_map` option that connects them (`models.action_map.check_action_space`, as
    offline replay refuses a bag's): a 7-D end-effector model must not reach a 2-D twist."""
    from vla_pruned_ros.evaluation.bag_replay import ACTION_SPACE_TASK
    from vla_pruned_ros.models.action_map import check_action_space
    from vla_pruned_ros.sim.registry import task_class

    space = next((s for s, t in ACTION_SPACE_TASK.items() if t == task), task)
    check_action_space(info, task_class(task).action_names, space, f"task {task!r}")


_WORKER: dict[str, Any] = {}


def _policy_and_task(job: EvalJob):
    device = job.device or task_device()
    key = (job.task, job.model, job.supersample, job.action_gain, job.adapter, job.adapter_options,
           job.mode, device)  # fmt: skip
    if _WORKER.get("key") != key:
        from vla_pruned_ros.models.registry import load_policy
        from vla_pruned_ros.sim import make_task

        if "task" in _WORKER:  # forget it before loading: a load that fails must not leave
            _WORKER.pop("task").close()  # a closed simulator for the next shard
        _WORKER.clear()
        extra = {} if job.supersample is None else {"supersample": job.supersample}
        task = make_task(job.task, **extra)
        loader = {"adapter": job.adapter, **job.options}
        if job.mode is not None:
            loader["mode"] = job.mode
        if device is not None:
            loader["device"] = device
        policy = load_policy(job.model, job.task, **loader)
        check_task_actions(policy.info, job.task)
        if job.action_gain is not None:
            policy.set_action_gain(job.action_gain)
        _WORKER.update(key=key, policy=policy, task=task)
    return _WORKER["policy"], _WORKER["task"]


def run_episode(job: EvalJob) -> dict[str, Any]:
    policy, task = _policy_and_task(job)
    obs = task.reset(job.seed, phrasing=job.phrasing)
    gate = None
    if job.gate != "none":
        from vla_pruned_ros.evaluation.gated_loop import SimGate

        gate = SimGate(task, job.gate)
    latencies = []
    while True:
        start = time.perf_counter()
        action = policy.predict(obs.image, obs.instruction)
        latencies.append((time.perf_counter() - start) * 1e3)
        if not np.all(np.isfinite(action)):  # a broken model stops the robot: a failure
            break
        if gate is not None:  # what the safety monitor would let through to the robot
            action = gate.filter(action)
        result = task.step(action)
        if gate is not None:
            gate.observe()
        obs = result.observation
        if result.done:
            break
    gated = {} if gate is None else gate.stats()
    return {**task.metrics(), "model": job.model, "phrasing": job.phrasing, "gate": job.gate,
            **gated,
            "step_latency_ms": latencies,
            "model_memory_bytes": policy.info.memory_bytes}  # fmt: skip


def run_shard(jobs: list[EvalJob]) -> list[dict[str, Any]]:
    """One work item: consecutive episodes in one process (the model loaded once for them)."""
    return [run_episode(job) for job in jobs]


def episode_work(cell: str, jobs: list[EvalJob], shard: int) -> list[Work]:
    """A cell's episodes as work items of `shard` episodes each."""
    return [Work(cell, run_shard, (jobs[i : i + shard],), len(jobs[i : i + shard]))
            for i in range(0, len(jobs), shard)]  # fmt: skip


@dataclass
class EpisodeCell:
    records: list[dict[str, Any]] = field(default_factory=list)  # in job order
    error: str | None = None


def _records(outcome: CellOutcome) -> EpisodeCell:
    if outcome.failed:
        return EpisodeCell(error=outcome.error)
    return EpisodeCell([r for shard in outcome.results for r in shard])


def run_cells(cells: dict[str, list[EvalJob]], options: Parallel, desc: str = "",
              on_cell: Callable[[str, EpisodeCell], None] | None = None
              ) -> dict[str, EpisodeCell]:  # fmt: skip
    """Every cell's episodes (in job order) or its error, the cells sharing one bar; `on_cell`
    sees each cell as it finishes."""
    work = [w for name, jobs in cells.items()
            for w in episode_work(name, jobs, options.shard_episodes)]  # fmt: skip
    hook: OnCell | None = None
    if on_cell is not None:
        hook = lambda name, outcome: on_cell(name, _records(outcome))  # noqa: E731
    outcomes = run(work, options, desc, hook)
    return {name: _records(outcomes[name]) if name in outcomes else EpisodeCell()
            for name in cells}  # fmt: skip


class EvaluationFailed(RuntimeError):
    """A run's episodes could not all be run (the first error, after Ray's retries)."""


def run_jobs(jobs: list[EvalJob], options: Parallel | None = None,
             desc: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Records in job order, in this process by default. Raises EvaluationFailed with the
    first error."""
    name = desc or "episodes"
    cell = run_cells({name: jobs}, options or Parallel(progress=False), desc)[name]
    if cell.error is not None:
        raise EvaluationFailed(cell.error)
    return cell.records
