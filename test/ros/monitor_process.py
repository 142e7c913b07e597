"""The safety monitor as a real process for tests whose graph has no camera and no policy: the
monitor's two checks for those inputs switched off the way a user would (timeouts of 0), a
generous command timeout (a loaded machine delays a test's 10 Hz), and a Watcher on its output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cmd_watcher import Watcher

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def camera_less_monitor(params_file: Path, report_dir: Path, *extra: str) -> Iterator[Watcher]:
    """Start the monitor with `params_file` and `-p` overrides `extra`; yield a Watcher; kill it."""
    args = [
        "-m", "vla_pruned_ros.ros.safety_monitor_node", "--ros-args",
        "--params-file", str(params_file),
        "-p", f"report_dir:={report_dir}",
        "-p", "limits.command_timeout_s:=2.0",
        "-p", "limits.camera_timeout_s:=0.0",
        "-p", "limits.policy_timeout_s:=0.0",
        *extra,
    ]  # fmt: skip
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=dict(os.environ))
    watcher = Watcher()
    try:
        yield watcher
    finally:
        watcher.close()
        proc.kill()
        proc.wait()
