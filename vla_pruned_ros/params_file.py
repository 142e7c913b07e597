"""Reading a node's section of a ROS 2 parameter file, so CLIs and nodes share one YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_ros_params(path: Path, node: str) -> dict[str, Any]:
    """`node: ros__parameters: {...}` of a ROS 2 params file (a `/**` section also counts)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    for key in (node, f"/{node}", "/**"):
        section = data.get(key) if isinstance(data, dict) else None
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return dict(section["ros__parameters"])
    raise ValueError(f"{path} has no '{node}: ros__parameters:' section")
