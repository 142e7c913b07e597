"""The simulator stays free of ROS and torch, and its pure parts free of mujoco, so worker
processes start fast and the ROS safety monitor can reuse the detectors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return set(out.stdout.split())


def test_the_simulator_imports_no_ros_and_no_torch() -> None:
    loaded = _modules_after(
        "from vla_pruned_ros.sim import make_task, check, safety, instructions, nav, manip\n"
        "make_task('nav').close()"
    )
    assert "mujoco" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"rclpy", "torch", "rosidl_runtime_py"}}


def test_detectors_and_instructions_import_without_mujoco() -> None:
    loaded = _modules_after("import vla_pruned_ros.sim.safety, vla_pruned_ros.sim.instructions")
    assert "mujoco" not in loaded


def test_task_names_import_without_mujoco() -> None:
    """A command line's --task choices come from sim.TASKS, which must not start the
    simulator (nor a GL context) just to list two names."""
    loaded = _modules_after(
        "from vla_pruned_ros.sim import TASKS\nassert TASKS == ('nav', 'manip')"
    )
    assert "mujoco" not in loaded
