"""Closed-loop episodes: a policy drives a MuJoCo task from camera frames and an instruction.

Episodes run in worker processes (one model and one renderer per worker); each returns a plain
record (the task's metrics plus per-step latencies), which `stats.summarize` aggregates.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

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


def heldout_seeds(first: int, count: int) -> list[int]:
    """Evaluation scenes: never used for training data (seeds >= HELD_OUT_SEED_START)."""
    return [HELD_OUT_SEED_START + first + i for i in range(count)]


def calibration_seeds(first: int, count: int) -> list[int]:
    """Scenes for tuning inference-time settings: training distribution, never trained on."""
    return [CALIBRATION_SEED_START + first + i for i in range(count)]


_WORKER: dict[str, Any] = {}


def _setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _policy_and_task(job: EvalJob):
    key = (job.task, job.model, job.supersample, job.action_gain)
    if _WORKER.get("key") != key:
        from vla_pruned_ros.models.registry import load_policy
        from vla_pruned_ros.sim import make_task

        if "task" in _WORKER:
            _WORKER["task"].close()
        extra = {} if job.supersample is None else {"supersample": job.supersample}
        task = make_task(job.task, **extra)
        policy = load_policy(job.model, job.task)
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


def run_jobs(jobs: list[EvalJob], workers: int = 2) -> Iterator[dict[str, Any]]:
    """Records in job order; workers=0 runs in this process (for tests and debugging)."""
    if workers <= 0:
        yield from map(run_episode, jobs)
        return
    threads = max(1, 2 // workers)
    with mp.get_context("spawn").Pool(workers, initializer=_setup, initargs=(threads,)) as pool:
        yield from pool.imap(run_episode, jobs, chunksize=4)
        pool.close()  # let the workers exit on their own: no semaphores left to the tracker
        pool.join()
