"""Behaviour cloning loop for the embedded VLA: seeded, resumable, with a progress bar.

Each step trains one task's head (tasks alternate) on a grouped batch (a few episodes x several
frames). The batch at step k depends only on (seed, k), so a resumed run sees exactly the batches
an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm import tqdm

from vla_pruned_ros.models.embedded import EmbeddedVLA
from vla_pruned_ros.models.minilm import MiniLMTokenizer
from vla_pruned_ros.paths import atomic_path, atomic_write
from vla_pruned_ros.training.dataset import Demonstrations, GroupedSampler


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000
    episodes_per_batch: int = 16
    frames_per_episode: int = 16
    lr: float = 1e-3
    text_lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    max_shift_px: int = 4
    seed: int = 0
    checkpoint_every: int = 250
    # the order tasks take turns in, repeated (default: each task once, alphabetically); e.g.
    # ("manip", "manip", "nav") gives manipulation, the harder task, two steps in three
    task_cycle: tuple[str, ...] = ()
    # weight of the auxiliary scene-state loss (EmbeddedVLA.training_losses) for tasks whose
    # demonstrations carry states; 0 trains on actions alone, as the v4 model was
    state_loss_weight: float = 0.0


def _optimizer(model: EmbeddedVLA, cfg: TrainConfig) -> torch.optim.Optimizer:
    text = [p for p in model.text.parameters() if p.requires_grad]
    text_ids = {id(p) for p in text}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in text_ids]
    return torch.optim.AdamW(
        [{"params": rest, "lr": cfg.lr}, {"params": text, "lr": cfg.text_lr}],
        weight_decay=cfg.weight_decay,
    )


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _random_shift(images: torch.Tensor, max_px: int, g: torch.Generator) -> torch.Tensor:
    """Random-shift augmentation (pad + crop), the standard cure for BC overfitting on pixels."""
    if max_px <= 0:
        return images
    n, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2), (max_px,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_px + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * max_px + 1, (n,), generator=g)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return out.permute(0, 2, 3, 1).contiguous()


def save_checkpoint(model: EmbeddedVLA, opt: torch.optim.Optimizer, step: int, path: Path) -> None:
    """Model and optimizer state as safetensors + JSON (no pickle), written atomically."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    state = opt.state_dict()
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    meta = {"step": step, "param_groups": groups}
    atomic_write(path.with_suffix(".json"), json.dumps(meta))


def load_checkpoint(model: EmbeddedVLA, opt: torch.optim.Optimizer, path: Path) -> int:
    tensors = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    ref = opt.state_dict()
    groups = [
        {**g, "params": r["params"]}
        for g, r in zip(meta["param_groups"], ref["param_groups"], strict=True)
    ]
    opt.load_state_dict({"state": state, "param_groups": groups})
    return int(meta["step"])


def _progress_line(step: int, total: int, seconds: float, losses: dict[str, float]) -> str:
    """What the progress bar would show, for logs: step, per-task loss, pace and time left
    (`seconds`: training time of all steps so far, resumed runs included)."""
    pace = seconds / max(1, step)
    loss = " ".join(f"{t} {v:.4f}" for t, v in sorted(losses.items()))
    return (
        f"train step {step}/{total}: loss {loss}, {pace:.2f} s/step, "
        f"~{pace * (total - step) / 60:.0f} min left"
    )


def train(
    model: EmbeddedVLA,
    tokenizer: MiniLMTokenizer,
    demos: dict[str, Demonstrations],
    cfg: TrainConfig,
    workdir: Path,
    resume: bool = True,
    stop_at: int | None = None,
) -> dict[str, object]:
    """Train in place; returns a log with per-task loss curves and timing. `stop_at` ends the
    run early at that step (with a checkpoint), as an interruption would; resume continues."""
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tasks = sorted(demos)
    cycle = tuple(cfg.task_cycle) or tuple(tasks)
    unknown = sorted(set(cycle) - set(tasks))
    if unknown:
        raise ValueError(f"task_cycle names {unknown}; the demonstrations are for {tasks}")
    samplers = {
        t: GroupedSampler(demos[t], cfg.episodes_per_batch, cfg.frames_per_episode) for t in tasks
    }
    tokens = {t: tokenizer(demos[t].instructions, model.config.max_text_tokens) for t in tasks}
    scale = {t: np.asarray(model.config.action_scale[t], np.float32) for t in tasks}
    with_state = {t for t in tasks if cfg.state_loss_weight > 0 and demos[t].states is not None}
    if cfg.state_loss_weight > 0:
        if not with_state:
            raise ValueError(
                "state_loss_weight > 0 but no demonstrations carry scene states: collect them "
                "again (the collector records a task's scene_state() where it defines one)"
            )
        missing = sorted(with_state - set(model.state_heads))
        if missing:
            raise ValueError(f"the model has no state readout for {missing}; set state_dims")
    opt = _optimizer(model, cfg)
    ckpt = workdir / "checkpoint.safetensors"
    log_path = workdir / "train_log.json"
    log: dict[str, object] = {
        "config": asdict(cfg),
        "loss": {t: [] for t in tasks},
        "state_loss": {t: [] for t in sorted(with_state)},
    }
    start = 0
    if resume and ckpt.exists():
        start = load_checkpoint(model, opt, ckpt)
        if log_path.exists():
            log = json.loads(log_path.read_text())
    model.train()
    t0 = time.monotonic()
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    bar = tqdm(
        range(start, end),
        initial=start,
        total=cfg.steps,
        desc="train",
        unit="step",
        disable=None,
    )
    running: dict[str, float] = {}
    running_state: dict[str, float] = {}
    for step in bar:
        task = cycle[step % len(cycle)]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout: same masks after a resume
        index, instr = samplers[task].batch(g)
        uniq, inverse = np.unique(instr, return_inverse=True)
        d = demos[task]
        images = _random_shift(torch.from_numpy(d.images[index]), cfg.max_shift_px, g)
        target = torch.from_numpy(np.clip(d.actions[index] / scale[task], -1.0, 1.0))
        ids = tokens[task]["input_ids"][uniq]
        mask = tokens[task]["attention_mask"][uniq]
        width = int(mask.sum(1).max())
        text = model.encode_text(ids[:, :width], mask[:, :width])[torch.from_numpy(inverse)]
        state = torch.from_numpy(d.states[index]) if task in with_state else None
        losses = model.training_losses(images, text, task, target, state)
        loss = losses["action"] + cfg.state_loss_weight * losses.get("state", 0.0)
        for group, base in zip(opt.param_groups, (cfg.lr, cfg.text_lr), strict=True):
            group["lr"] = base * _lr_factor(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = losses["action"].item()  # the action loss alone: curves compare across runs
        running[task] = 0.95 * running.get(task, value) + 0.05 * value
        if "state" in losses:
            value = losses["state"].item()
            running_state[task] = 0.95 * running_state.get(task, value) + 0.05 * value
        bar.set_postfix({t: f"{v:.4f}" for t, v in running.items()})
        if step % 10 < len(cycle):  # log each task about every 10 steps
            log["loss"][task].append([step, running[task]])
            if task in running_state:
                curves = log.setdefault("state_loss", {})  # a log from before states
                curves.setdefault(task, []).append([step, running_state[task]])
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            save_checkpoint(model, opt, step + 1, ckpt)
            log["seconds"] = log.get("seconds", 0.0) + time.monotonic() - t0
            t0 = time.monotonic()
            atomic_write(log_path, json.dumps(log))
            if bar.disable:  # no terminal (nohup, CI): one line per checkpoint instead
                line = _progress_line(step + 1, cfg.steps, float(log["seconds"]), running)
                print(line, flush=True)
    model.eval()
    return log
