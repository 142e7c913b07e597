"""Turning a deployment's `artifact` and `adapter` parameters into a policy adapter.

Adapters a user names in one word: `embedded` (the shipped VLA and its artifacts), `openvla`
(a checkpoint exposing OpenVLA's predict_action), `lerobot` (a LeRobot policy folder), `text` (a
VLM that answers in words, parsed into an action); anything else is a user's own class as
`module:Class`, which receives every option. With the default adapter, an artifact whose
manifest names a preset (`extra.deploy.adapter`, written by vla-prune) uses it. `action_map`
(any adapter) connects the model's action space to the one the deployment wants.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light imports here: torch and the models load in _load, so the CLIs and the bringup
# reader check adapter names without paying for them.
from vla_pruned_ros.models.base import PolicyAdapter

if TYPE_CHECKING:
    from vla_pruned_ros.models.instruction_cache import InstructionCache

EMBEDDED = "embedded"
PRESETS = ("embedded", "openvla", "lerobot", "text")


def adapter_problem(name: str) -> str | None:
    """Why `name` cannot name an adapter, with the names that can, or None. Checked where a
    name first arrives (a CLI flag, a bringup file, the node's configure) so a typo is refused
    before a model loads, with what to write instead."""
    if name in ("", *PRESETS):
        return None
    module, sep, cls = name.partition(":")
    if sep and module.strip() and cls.strip() and ":" not in cls:
        return None
    return (f"adapter {name!r} is neither a preset ({', '.join(PRESETS)}) nor a user's "
            "PolicyAdapter class written as 'package.module:Class'")  # fmt: skip


def manifest_adapter(folder: Path) -> tuple[str, dict[str, Any]]:
    """The adapter preset and options an artifact's manifest records ('' when none)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return "", {}
    entry = ((manifest.get("extra") or {}).get("deploy") or {}).get("adapter") or ""
    if isinstance(entry, dict):
        return str(entry.get("name", "")), dict(entry.get("options") or {})
    return str(entry), {}


def not_embedded_hint(folder: Path) -> str:
    """What to set when a folder that is not the embedded VLA reaches the embedded loader."""
    config: dict[str, Any] = {}
    try:
        if (folder / "manifest.json").is_file():
            manifest = json.loads((folder / "manifest.json").read_text())
            config = (manifest.get("extra") or {}).get("model_config") or {}
        elif (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        pass
    if not config or "action_names" in config:  # the embedded VLA's own config names actions
        return ""
    if "norm_stats" in config:
        guess = "adapter:=openvla (its config has OpenVLA's norm_stats)"
    elif (folder / "policy_preprocessor.json").is_file() or config.get("type") in (
        "smolvla", "pi0", "pi05"
    ):  # fmt: skip
        guess = "adapter:=lerobot"
    else:
        guess = "adapter:=openvla, lerobot, text (a VLM that answers in words) or module:Class"
    remote = "; add trust_remote_code:=true if you trust its code" if config.get("auto_map") else ""
    return (f"{folder} is a checkpoint (or an artifact of one), not the embedded VLA: set "
            f"{guess}{remote}")  # fmt: skip


# Set by the deployment itself rather than by an adapter option, so no preset names them.
_NOT_OPTIONS = frozenset({"self", "artifact", "folder", "task", "mode", "device"})


def preset_options(loader: Callable[..., Any]) -> list[str]:
    """The option names a preset's loader takes (its keyword parameters)."""
    params = inspect.signature(loader).parameters.values()
    return sorted(p.name for p in params if p.name not in _NOT_OPTIONS
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))  # fmt: skip


def check_options(adapter: str, loader: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse an option the preset does not take, naming the ones it does: a misspelt
    `unorm_key` must not be silently ignored while the model loads with the wrong statistics.
    `trust_remote_code` is every deployment's own switch and always allowed."""
    known = preset_options(loader)
    unknown = sorted(set(options) - set(known) - {"trust_remote_code"})
    if unknown:
        raise ValueError(f"adapter {adapter!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(known)} (action_map: any adapter)")  # fmt: skip


def load_policy(
    artifact: str,
    task: str,
    mode: str | None = None,
    device: str = "cpu",
    adapter: str = EMBEDDED,
    instruction_cache: InstructionCache | None = None,
    **options: Any,
) -> PolicyAdapter:
    """`artifact` ('embedded', an artifact folder or a saved model's folder) through `adapter`.
    `options` are the adapter's (unnorm_key, trust_remote_code, action_map, ...); `mode` is how
    a compressed artifact's pruned layers run (None: `auto`, see `compression.runtime_modes`).
    `instruction_cache` (the embedded VLA only; offline replay opts in): its text features
    come from that on-disk cache where they are stored, and a saved model then loads without
    its text encoder until an instruction is missing (`models.instruction_cache`)."""
    options = dict(options)
    action_map = options.pop("action_map", None)
    folder = Path(artifact).expanduser() if artifact not in ("", EMBEDDED) else None
    if folder is not None:
        # the artifact's recorded adapter and options (vla-prune --adapter-option) apply under
        # the given ones whether the adapter is left unset or named the same: a bringup that
        # names `adapter: openvla` to add an action_map keeps the artifact's dtype=bfloat16
        preset, recorded = manifest_adapter(folder)
        if preset and preset != EMBEDDED and adapter in ("", EMBEDDED, preset):
            recorded.pop("trust_remote_code", None)  # only ever the deployment's own opt-in
            adapter, options = preset, {**recorded, **options}
            recorded_map = options.pop("action_map", None)  # never passed on as an option
            action_map = action_map or recorded_map
    policy = _load(artifact, folder, task, mode, device, adapter, options, instruction_cache)
    if action_map:
        from vla_pruned_ros.models.action_map import apply_action_map

        policy = apply_action_map(policy, action_map)
    return policy


def _load(artifact: str, folder: Path | None, task: str, mode: str | None, device: str,
          adapter: str, options: dict[str, Any],
          cache: InstructionCache | None = None) -> PolicyAdapter:  # fmt: skip
    if folder is not None and not folder.exists():
        raise FileNotFoundError(f"artifact {folder} does not exist")
    if adapter == "openvla":
        from vla_pruned_ros.models.openvla_adapter import load_openvla_policy

        check_options(adapter, load_openvla_policy, options)
        return load_openvla_policy(artifact, task, mode=mode, device=device, **options)
    if adapter == "lerobot":
        from vla_pruned_ros.models.lerobot_adapter import LeRobotPolicy, load_lerobot_policy

        check_options(adapter, LeRobotPolicy.__init__, options)
        return load_lerobot_policy(artifact, task, device=device, **options)
    if adapter == "text":
        from vla_pruned_ros.models.text_action import load_text_policy

        check_options(adapter, load_text_policy, options)
        return load_text_policy(artifact, task, mode=mode, device=device, **options)
    if adapter not in ("", EMBEDDED):
        problem = adapter_problem(adapter)
        if problem:
            raise ValueError(problem)
        from vla_pruned_ros.models.adapters import load_user_adapter

        return load_user_adapter(adapter, artifact, task, mode=mode, device=device, **options)
    from vla_pruned_ros.models.embedded import EmbeddedPolicy, load_embedded

    extra = sorted(set(options) - {"trust_remote_code"})
    if extra:
        raise ValueError(f"the embedded adapter takes no option {', '.join(map(repr, extra))} "
                         "(only action_map); for a checkpoint set adapter to one of "
                         f"{', '.join(PRESETS[1:])} or module:Class")  # fmt: skip
    hint = not_embedded_hint(folder) if folder is not None else ""
    if hint:
        raise ValueError(hint)
    if folder is not None and (folder / "manifest.json").is_file():
        return _embedded_artifact(folder, task, mode, device, cache)
    overrides = {"model_id": folder.name} if folder is not None else {}
    if cache is None:
        return EmbeddedPolicy(load_embedded(folder).to(device), task, overrides or None)
    from vla_pruned_ros.models.embedded_config import minilm_identity
    from vla_pruned_ros.models.embedded_io import load_embedded_vision, weights_identity

    vision, memory = load_embedded_vision(folder)
    identity = {"weights": weights_identity(folder), "minilm": minilm_identity()}
    return EmbeddedPolicy(vision.to(device), task, {**overrides, "memory_bytes": memory},
                          encoder=lambda: load_embedded(folder).to(device), cache=cache,
                          identity=identity)  # fmt: skip


def _embedded_artifact(folder: Path, task: str, mode: str | None, device: str,
                       cache: InstructionCache | None) -> PolicyAdapter:  # fmt: skip
    """An embedded-VLA artifact. With an instruction cache and a mode decided from the manifest
    (`embedded_artifact.VISION_MODES`, the default among them): its vision stem and heads
    only, and the whole artifact on the first instruction the cache lacks, as `_load` does
    for a saved model. The cache key names the artifact's manifest and the whole model's
    runtime modes either way."""
    from vla_pruned_ros.compression.artifact_layout import sha256_file
    from vla_pruned_ros.models import embedded_artifact as ea
    from vla_pruned_ros.models.embedded import EmbeddedPolicy
    from vla_pruned_ros.models.embedded_config import minilm_identity

    def identity(runtime: str) -> dict[str, str]:  # the cache key's names, either way
        return {"artifact": sha256_file(folder / "manifest.json"), "runtime": runtime,
                "minilm": minilm_identity()}  # fmt: skip

    if cache is not None and mode in ea.VISION_MODES:
        vision, info, runtime = ea.load_embedded_vision_artifact(folder, mode=mode, device=device)
        return EmbeddedPolicy(vision, task, info, cache=cache, identity=identity(runtime),
                              encoder=lambda: ea.checked_artifact_encoder(
                                  folder, mode, device, runtime, info["memory_bytes"]))  # fmt: skip
    model = ea.load_embedded_artifact(folder, mode=mode, device=device)
    cached = {}
    if cache is not None:
        from vla_pruned_ros.compression.runtime_modes import runtime_summary

        cached = {"cache": cache, "identity": identity(runtime_summary(model).modes)}
    return EmbeddedPolicy(model, task, ea.artifact_info(model), **cached)
