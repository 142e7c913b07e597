"""Task names -> task classes (imported on first use, so listing names needs no mujoco)."""

from __future__ import annotations

from typing import Any

from vla_pruned_ros.sim.base import Task

TASKS = ("nav", "manip")


def _tasks() -> dict[str, type[Task]]:
    from vla_pruned_ros.sim.manip import ManipTask
    from vla_pruned_ros.sim.nav import NavTask

    return {"nav": NavTask, "manip": ManipTask}


def make_task(name: str, **kwargs: Any) -> Task:
    """A task instance by name, e.g. make_task("nav", image_size=96)."""
    tasks = _tasks()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known: {sorted(tasks)}")
    return tasks[name](**kwargs)
