"""Expert demonstrations with noise injection (DART-style): the executed action is the expert's
plus Gaussian noise, the label is the expert's clean action, so the policy sees the states a
slightly wrong policy reaches and learns how the expert recovers from them.

With a `policy` (DAgger), the policy drives and the expert only labels: the data then holds the
states the learner itself reaches, the ones behaviour cloning never shows it. The experts are
computed from the simulator state alone, so they can label any state.

Episodes run through the one parallel path (`evaluation/parallel.py`): in this process by
default, as Ray tasks with `Parallel(ray=...)`. Each episode depends only on its seed (its own
noise generator, a reset scene), so the same seeds give the same demonstrations whichever way
they run and however they are sharded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_pruned_ros.evaluation.parallel import Parallel, Work, run
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


Episode = tuple[np.ndarray, np.ndarray, np.ndarray | None, str, bool]


def _episodes(cfg: CollectConfig, seeds: list[int]) -> list[Episode]:
    """One work item: the episodes of `seeds`, in order."""
    return [_episode(cfg, seed) for seed in seeds]


def _episode(cfg: CollectConfig, seed: int) -> Episode:
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


# One simulator and one policy per process, reused by the items it runs (a worker keeps them
# between items; a new configuration replaces them).
_TASK: dict[tuple, object] = {}
_POLICY: dict[tuple[str, str], object] = {}


def _worker_task(cfg: CollectConfig):
    key = (cfg.task, cfg.image_size, cfg.expert, cfg.supersample)
    if key not in _TASK:
        from vla_pruned_ros.sim import make_task

        extra = {"expert": cfg.expert} if cfg.expert else {}
        if cfg.supersample is not None:
            extra["supersample"] = cfg.supersample
        for old in _TASK.values():
            old.close()
        _TASK.clear()
        _TASK[key] = make_task(cfg.task, image_size=cfg.image_size, **extra)
    return _TASK[key]


def _worker_policy(cfg: CollectConfig):
    if cfg.policy is None:
        return None
    key = (cfg.policy, cfg.task)
    if key not in _POLICY:
        from vla_pruned_ros.models.registry import load_policy

        _POLICY.clear()
        _POLICY[key] = load_policy(cfg.policy, cfg.task)
    return _POLICY[key]


def collect(cfg: CollectConfig, options: Parallel | None = None) -> Demonstrations:
    """Run `cfg.episodes` episodes on training scenes, expert-labelled; driven by the noisy
    expert, or by `cfg.policy` (DAgger). `options`: where they run (default: in this process,
    one torch thread; `Parallel(ray="local")` on this machine's cores as Ray tasks)."""
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
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.episodes))
    options = options or Parallel()
    shard = options.shard_episodes
    cell = f"collect {cfg.task}"
    work = [Work(cell, _episodes, (cfg, seeds[i : i + shard]), len(seeds[i : i + shard]))
            for i in range(0, len(seeds), shard)]  # fmt: skip
    outcome = run(work, options, cell)[cell]
    if outcome.failed:
        raise RuntimeError(f"collecting {cfg.task} demonstrations failed: {outcome.error}")
    images, actions, states, instr_ids, episode_ids = [], [], [], [], []
    instructions: dict[str, int] = {}
    successes = 0
    episodes = [e for item in outcome.results for e in item]
    for ep, (imgs, labels, scene, text, ok) in enumerate(episodes):
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
