"""Task names -> task classes."""

from __future__ import annotations

from vla_pruned_ros.sim.base import Task


def _tasks() -> dict[str, type[Task]]:
    from vla_pruned_ros.sim.manip import ManipTask
    from vla_pruned_ros.sim.nav import NavTask

    return {"nav": NavTask, "manip": ManipTask}


TASKS = ("nav", "manip")


def make_task(name: str, **kwargs) -> Task:
    tasks = _tasks()
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known: {sorted(tasks)}")
    return tasks[name](**kwargs)
