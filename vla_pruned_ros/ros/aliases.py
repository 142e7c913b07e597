"""The old executable names (`ros2 run vla_pruned_ros safety_monitor`, `... bag_player`), kept
for a while so that a user's scripts keep working: each prints one deprecation line naming the
new executable and runs it. The renames live in `bringup.RENAMED_EXECUTABLES`."""

from __future__ import annotations

import importlib
import sys

from vla_pruned_ros.bringup import RENAMED_EXECUTABLES


def _run(old: str) -> int:
    new = RENAMED_EXECUTABLES[old]
    print(f"{old}: deprecated executable name, renamed {new} (running that)", file=sys.stderr)
    return importlib.import_module(f"vla_pruned_ros.ros.{new}").main()


def safety_monitor() -> int:
    return _run("safety_monitor")


def bag_player() -> int:
    return _run("bag_player")
