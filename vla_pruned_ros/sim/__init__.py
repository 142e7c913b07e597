"""MuJoCo tasks for the embedded VLA: navigation and tabletop manipulation (no ROS, no torch).

Rendering is headless; MUJOCO_GL defaults to EGL (Mesa llvmpipe on CPU) unless already set, and
it must be set before mujoco is first imported, hence here. The task classes load lazily, so the
pure parts (`instructions`, `safety`) import without mujoco or a GL context.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

_LAZY = {
    "EpisodeRecord": "base",
    "Observation": "base",
    "StepResult": "base",
    "Task": "base",
    "TASKS": "registry",
    "make_task": "registry",
    "task_class": "registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
