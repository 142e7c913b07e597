"""The one small interface every policy adapter implements, so that the ROS node, the simulator
evaluation and the bag replay never care which model is behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PolicyInfo:
    """What a deployment reports about its model (VLAAction fields, diagnostics, reports)."""

    model_id: str
    variant: str  # "dense" | "pruned" | "gluestick" | "structured"
    rank: int  # GLUESTICK rank; -1 when not applicable or ranks differ per layer
    action_space: str
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    memory_bytes: int


class PolicyAdapter(Protocol):
    info: PolicyInfo

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        """One action (float32, len(info.action_names)) from an RGB uint8 HxWx3 frame."""
        ...
