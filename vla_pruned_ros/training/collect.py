"""Expert demonstrations with noise injection (DART-style): the executed action is the expert's
plus Gaussian noise, the label is the expert's clean action, so the policy sees the states a
slightly wrong policy reaches and learns how the expert recovers from them.

With a `policy` (DAgger), the policy drives and the expert only labels: the data then holds the
states the learner itself reaches, the ones behaviour cloning never shows it. The experts are
computed from the simulator state alone, so they can label any state."""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from vla_pruned_ros.sim.instructions import CALIBRATION_SEED_START, HELD_OUT_SEED_START
from vla_pruned_ros.training.dataset import Demonstrations


@dataclass(frozen=True)
class CollectConfig:
    task: str
    episodes: int
    first_seed: int = 0
    noise: float = 0.3  # std of the injected noise, as a fraction of the action bound
    noisy_fraction: float = 0.7  # share of episodes with noise (the rest are clean)
    image_size: int = 64
    policy: str | None = None  # weights folder or "embedded": on-policy (DAgger) collection
    expert_share: float = 0.0  # with a policy: share of steps the expert's action is executed
    expert: str = ""  # the task's expert variant ("" its default; manip: "routing" | "smooth")
    supersample: int | None = None  # the camera's supersampling (None: the simulator's)


def _episode(
    args: tuple[CollectConfig, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str, bool]:
    cfg, seed = args
    task = _worker_task(cfg)
    rng = np.random.default_rng(seed + 7_777_777)
    obs = task.reset(seed)
    noisy = rng.random() < cfg.noisy_fraction
    policy = _worker_policy(cfg)
    images, labels, states = [], [], []
    while True:
        label = task.expert_action()
        images.append(obs.image)
        labels.append(label.astype(np.float32))
        states.append(task.scene_state())
        if policy is not None and rng.random() >= cfg.expert_share:
            action = policy.predict(obs.image, obs.instruction)
        else:
            noise = rng.normal(0, cfg.noise, label.shape) * task.action_high if noisy else 0
            action = label + noise
        result = task.step(action)
        obs = result.observation
        if result.done:
            break
    scene = None if states[0] is None else np.stack(states)
    return np.stack(images), np.stack(labels), scene, task.instruction, task.success


_TASK = None
_POLICY: dict[str, object] = {}


def _worker_task(cfg: CollectConfig):
    global _TASK
    if _TASK is None:
        from vla_pruned_ros.sim import make_task

        extra = {"expert": cfg.expert} if cfg.expert else {}
        if cfg.supersample is not None:
            extra["supersample"] = cfg.supersample
        _TASK = make_task(cfg.task, image_size=cfg.image_size, **extra)
    return _TASK


def _worker_policy(cfg: CollectConfig):
    if cfg.policy is None:
        return None
    if cfg.policy not in _POLICY:
        import torch

        from vla_pruned_ros.models.registry import load_policy

        torch.set_num_threads(1)
        _POLICY.clear()
        _POLICY[cfg.policy] = load_policy(cfg.policy, cfg.task)
    return _POLICY[cfg.policy]


def collect(cfg: CollectConfig, workers: int = 2) -> Demonstrations:
    """Run `cfg.episodes` episodes on training scenes in worker processes, expert-labelled;
    driven by the noisy expert, or by `cfg.policy` (DAgger)."""
    if cfg.first_seed + cfg.episodes > CALIBRATION_SEED_START:
        raise ValueError(
            f"training episodes must use seeds below {CALIBRATION_SEED_START} (above are the "
            "calibration and held-out scenes)"
        )
    if cfg.expert:
        from vla_pruned_ros.sim import task_class

        known = task_class(cfg.task).experts
        if cfg.expert not in known:
            raise ValueError(f"the {cfg.task} task has no expert {cfg.expert!r}; known: {known}")
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.episodes)
    images, actions, states, instr_ids, episode_ids = [], [], [], [], []
    instructions: dict[str, int] = {}
    successes = 0
    with mp.get_context("spawn").Pool(workers) as pool:
        jobs = pool.imap(_episode, [(cfg, s) for s in seeds], chunksize=8)
        for ep, (imgs, labels, scene, text, ok) in enumerate(
            tqdm(jobs, total=cfg.episodes, desc=f"collect {cfg.task}", unit="ep", disable=None)
        ):
            idx = instructions.setdefault(text, len(instructions))
            images.append(imgs)
            actions.append(labels)
            states.append(scene)
            instr_ids.append(np.full(len(labels), idx, np.int32))
            episode_ids.append(np.full(len(labels), ep, np.int32))
            successes += ok
    return Demonstrations(
        task=cfg.task,
        images=np.concatenate(images),
        actions=np.concatenate(actions),
        instruction_ids=np.concatenate(instr_ids),
        episode_ids=np.concatenate(episode_ids),
        instructions=list(instructions),
        meta={**cfg.__dict__, "expert_success_rate": successes / cfg.episodes},
        states=None if states[0] is None else np.concatenate(states),
    )


def expert_frames(
    task_name: str, seeds: list[int], every: int = 4, image_size: int = 64
) -> tuple[np.ndarray, list[str]]:
    """Camera frames and instructions along clean expert episodes of training scenes: the
    calibration data for Wanda and SparseGPT (never held-out scenes, which evaluation uses)."""
    from vla_pruned_ros.sim import make_task

    if any(s >= HELD_OUT_SEED_START for s in seeds):
        raise ValueError("calibration must not use held-out evaluation scenes")
    images, texts = [], []
    with make_task(task_name, image_size=image_size) as task:
        for seed in seeds:
            obs = task.reset(seed)
            step = 0
            while True:
                if step % every == 0:
                    images.append(obs.image)
                    texts.append(task.instruction)
                result = task.step(task.expert_action())
                obs, step = result.observation, step + 1
                if result.done:
                    break
    return np.stack(images), texts
