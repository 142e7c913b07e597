"""Task names -> task classes (imported on first use, so listing names needs no mujoco)."""

from __future__ import annotations

from typing import Any

from vla_pruned_ros.sim.base import Task

TASKS = ("nav", "manip")


def task_class(name: str) -> type[Task]:
    """The class of a task by name: its action names, bounds and experts without building a
    MuJoCo world."""
    from vla_pruned_ros.sim.manip import ManipTask
    from vla_pruned_ros.sim.nav import NavTask

    tasks: dict[str, type[Task]] = {"nav": NavTask, "manip": ManipTask}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known: {sorted(tasks)}")
    return tasks[name]


def make_task(name: str, **kwargs: Any) -> Task:
    """A task instance by name, e.g. make_task("nav", image_size=96)."""
    return task_class(name)(**kwargs)
