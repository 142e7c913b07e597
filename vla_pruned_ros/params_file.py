"""Reading a node's section of a ROS 2 parameter file, so CLIs and nodes share one YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

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


T = TypeVar("T")


def params_dataclass(cls: type[T], path: Path, node: str, overrides: dict[str, Any]) -> T:
    """A config dataclass from a node section plus the non-None overrides; an unknown key is an
    error that names the file (a typo must not silently keep a default)."""
    params = read_ros_params(path, node)
    params.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{path}: unknown parameters {unknown}; known: {sorted(known)}")
    return cls(**params)
