"""MuJoCo tasks for the embedded VLA: navigation and tabletop manipulation (no ROS, no torch).

Rendering is headless; MUJOCO_GL defaults to EGL (Mesa llvmpipe on CPU) unless set.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from vla_pruned_ros.sim.base import Observation, StepResult, Task  # noqa: E402
from vla_pruned_ros.sim.registry import TASKS, make_task  # noqa: E402

__all__ = ["TASKS", "Observation", "StepResult", "Task", "make_task"]
