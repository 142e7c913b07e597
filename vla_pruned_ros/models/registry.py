"""Turning a deployment's `artifact` parameter into a policy adapter."""

from __future__ import annotations

from pathlib import Path

from vla_pruned_ros.models.base import PolicyAdapter
from vla_pruned_ros.models.embedded import EmbeddedPolicy, load_embedded

EMBEDDED = "embedded"


def load_policy(artifact: str, task: str) -> PolicyAdapter:
    """`embedded` (the shipped default) or the folder of a saved embedded VLA."""
    if artifact in ("", EMBEDDED):
        return EmbeddedPolicy(load_embedded(), task)
    folder = Path(artifact).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"artifact {folder} does not exist")
    return EmbeddedPolicy(load_embedded(folder), task, {"model_id": folder.name})
