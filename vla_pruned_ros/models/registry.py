"""Turning a deployment's `artifact` parameter into a policy adapter."""

from __future__ import annotations

from pathlib import Path

from vla_pruned_ros.models.base import PolicyAdapter
from vla_pruned_ros.models.embedded import EmbeddedPolicy, load_embedded

EMBEDDED = "embedded"


def load_policy(
    artifact: str,
    task: str,
    mode: str = "materialize",
    device: str = "cpu",
    adapter: str = EMBEDDED,
) -> PolicyAdapter:
    """`embedded` (the shipped dense default), the folder of a compressed artifact (it holds a
    manifest.json; loaded in runtime `mode`), or the folder of a saved dense embedded VLA.
    `adapter` other than 'embedded' names a user's PolicyAdapter class as `module:Class`."""
    if adapter not in ("", EMBEDDED):
        from vla_pruned_ros.models.adapters import load_user_adapter

        return load_user_adapter(adapter, artifact, task, mode=mode, device=device)
    if artifact in ("", EMBEDDED):
        return EmbeddedPolicy(load_embedded(), task)
    folder = Path(artifact).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"artifact {folder} does not exist")
    if (folder / "manifest.json").is_file():
        from vla_pruned_ros.models.embedded_artifact import artifact_info, load_embedded_artifact

        model = load_embedded_artifact(folder, mode=mode, device=device)
        return EmbeddedPolicy(model, task, artifact_info(model))
    return EmbeddedPolicy(load_embedded(folder), task, {"model_id": folder.name})
