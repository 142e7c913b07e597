"""Demonstration datasets: frames, expert action labels, instruction ids and episode ids.

Stored as one safetensors file per task (no pickle), with the instruction strings and the
collection settings in the file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from vla_pruned_ros.paths import atomic_path


@dataclass
class Demonstrations:
    task: str
    images: np.ndarray  # (N, H, W, 3) uint8
    actions: np.ndarray  # (N, A) float32, expert labels in action units
    instruction_ids: np.ndarray  # (N,) int32 into `instructions`
    episode_ids: np.ndarray  # (N,) int32
    instructions: list[str]
    meta: dict[str, object] = field(default_factory=dict)
    # (N, S) float32: the simulator's scene_state() per frame, targets of the auxiliary
    # state loss; None for data collected without it (or from a task that defines none)
    states: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def merged(self, other: Demonstrations) -> Demonstrations:
        """Both datasets as one (DAgger's aggregation): episodes renumbered, instructions
        re-indexed into one list."""
        if other.task != self.task:
            raise ValueError(f"cannot merge {other.task} demonstrations into {self.task}")
        instructions = list(self.instructions)
        index = {text: i for i, text in enumerate(instructions)}
        for text in other.instructions:
            index.setdefault(text, len(instructions))
            if len(instructions) < len(index):
                instructions.append(text)
        remap = np.array([index[t] for t in other.instructions], np.int32)
        offset = int(self.episode_ids.max()) + 1 if len(self) else 0
        return Demonstrations(
            task=self.task,
            images=np.concatenate([self.images, other.images]),
            actions=np.concatenate([self.actions, other.actions]),
            instruction_ids=np.concatenate([self.instruction_ids, remap[other.instruction_ids]]),
            episode_ids=np.concatenate([self.episode_ids, other.episode_ids + offset]),
            instructions=instructions,
            meta={**self.meta, "merged": [*self.meta.get("merged", []), other.meta]},
            states=(
                np.concatenate([self.states, other.states])
                if self.states is not None and other.states is not None
                else None  # the aux loss needs a state for every frame
            ),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "images": self.images,
            "actions": self.actions.astype(np.float32),
            "instruction_ids": self.instruction_ids.astype(np.int32),
            "episode_ids": self.episode_ids.astype(np.int32),
        }
        if self.states is not None:
            tensors["states"] = self.states.astype(np.float32)
        meta = {"task": self.task, "instructions": json.dumps(self.instructions)}
        meta["meta"] = json.dumps(self.meta)
        with atomic_path(path) as tmp:  # a killed collection must not leave a cache
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> Demonstrations:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata()
        t = load_file(str(path))
        return cls(
            task=meta["task"],
            images=t["images"],
            actions=t["actions"],
            instruction_ids=t["instruction_ids"],
            episode_ids=t["episode_ids"],
            instructions=json.loads(meta["instructions"]),
            meta=json.loads(meta.get("meta", "{}")),
            states=t.get("states"),
        )


class GroupedSampler:
    """Batches of a few episodes x several frames each, so that a batch holds few distinct
    instructions and the language backbone runs once per instruction, not once per frame."""

    def __init__(self, demos: Demonstrations, episodes: int, frames: int) -> None:
        self.demos, self.episodes, self.frames = demos, episodes, frames
        order = np.argsort(demos.episode_ids, kind="stable")
        ids, starts, counts = np.unique(
            demos.episode_ids[order], return_index=True, return_counts=True
        )
        self.order, self.starts, self.counts = order, starts, counts
        self.n_episodes = len(ids)

    def batch(self, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices and, per frame, the row of its instruction in the unique list."""
        eps = torch.randint(self.n_episodes, (self.episodes,), generator=generator).numpy()
        offs = torch.rand((self.episodes, self.frames), generator=generator).numpy()
        rows = self.starts[eps][:, None] + (offs * self.counts[eps][:, None]).astype(np.int64)
        index = self.order[rows.reshape(-1)]
        return index, self.demos.instruction_ids[index]
