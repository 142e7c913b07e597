"""Task names -> task classes. The names (`TASKS`) are the one list every command-line choice and
loop over tasks reads; the classes, and mujoco with them, load on first use, so listing the names
imports no simulator."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vla_pruned_ros.sim.base import Task

# name -> "module:class" under vla_pruned_ros.sim; TASKS follows its order.
_CLASSES = {"nav": "nav:NavTask", "manip": "manip:ManipTask"}
TASKS: tuple[str, ...] = tuple(_CLASSES)


def task_class(name: str) -> type[Task]:
    """The class of a task by name: its action names, bounds and experts without building a
    MuJoCo world."""
    if name not in _CLASSES:
        raise ValueError(f"unknown task {name!r}; known: {sorted(_CLASSES)}")
    module, cls = _CLASSES[name].split(":")
    return getattr(importlib.import_module(f"vla_pruned_ros.sim.{module}"), cls)


def make_task(name: str, **kwargs: Any) -> Task:
    """A task instance by name, e.g. make_task("nav", image_size=96)."""
    return task_class(name)(**kwargs)
