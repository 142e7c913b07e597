"""A user's own checkpoint from a local Hugging Face folder: never a hub, never pickle.

`checkpoint_files` finds the safetensors weights (single file or sharded index),
`linear_layers` lists the model's nn.Linear modules by building the architecture on the meta
device (no memory, no weights), and `default_exclude` follows the paper: compress the language
backbone, skip the vision tower, the projector, the embeddings and the heads.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_EXCLUDE = ("*lm_head*", "*embed*", "*vision*", "*visual*", "*projector*",
                   "*action_head*", "*pooler*", "*classifier*")  # fmt: skip


class CheckpointError(ValueError):
    """A folder that cannot be compressed as given; the message says what to change."""


def checkpoint_files(folder: Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder with a saved model")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json: not a Hugging Face model folder")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are missing: {missing[:3]}")
        return [folder / s for s in shards]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(
        p.name for p in folder.glob("*.pt")
    )
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickle weights ({pickles[:2]}); this package reads safetensors "
            "only. Convert once with transformers: model.save_pretrained(out, "
            "safe_serialization=True)"
        )
    raise CheckpointError(f"{folder} has no weights (model.safetensors or its index)")


def architecture(folder: Path, trust_remote_code: bool = False) -> tuple[Any, type]:
    """(config, model class) from the folder alone (local_files_only)."""
    import transformers
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder, local_files_only=True,
                                        trust_remote_code=trust_remote_code)  # fmt: skip
    names = getattr(config, "architectures", None) or []
    cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)), None)
    if cls is None:
        if trust_remote_code:  # the caller's explicit opt-in; built on meta to learn its class
            with torch.device("meta"):
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
            return config, type(model)
        cls = AutoModel._model_mapping[type(config)]
    return config, cls


def skeleton(folder: Path, trust_remote_code: bool = False, device: str = "cpu") -> nn.Module:
    config, cls = architecture(folder, trust_remote_code)
    with torch.device(device):
        return cls(config)


def model_keys(model: nn.Module, file_keys: Iterable[str]) -> dict[str, str]:
    """File key -> the model's state-dict key, for the keys that differ. Transformers renames
    legacy layouts at load time (a LLaVA-style VLM stores `language_model.model.layers.0...`
    for the module `model.language_model.layers.0...`); its own renaming rules are applied here
    so streaming sees the model's names. Conversions that reshape tensors (fused experts) are
    refused: streaming cannot split a tensor it has not read."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            rename_source_key,
        )
    except ImportError:  # an older transformers: checkpoints use the module names
        return {}
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    state = model.state_dict()
    prefix = getattr(model, "base_model_prefix", None) or None
    out: dict[str, str] = {}
    for key in file_keys:
        new, reshaped = rename_source_key(key, renamings, converters, prefix, state)
        if reshaped is not None:
            raise CheckpointError(f"{key} must be converted by transformers on load (pattern "
                                  f"{reshaped}); this layout cannot be streamed")  # fmt: skip
        if new != key:
            out[key] = new
    return out


def linear_layers(folder: Path, trust_remote_code: bool = False) -> list[str]:
    return [n for n, m in skeleton(folder, trust_remote_code, "meta").named_modules()
            if isinstance(m, nn.Linear)]  # fmt: skip


def select(names: Sequence[str], include: Sequence[str] | None,
           exclude: Sequence[str] | None) -> list[str]:  # fmt: skip
    """Layers the globs select; the paper's default excludes when no globs are given."""
    exclude = DEFAULT_EXCLUDE if include is None and exclude is None else (exclude or ())
    chosen = [
        n for n in names
        if (not include or any(fnmatch.fnmatch(n, g) for g in include))
        and not any(fnmatch.fnmatch(n, g) for g in exclude)
    ]  # fmt: skip
    if not chosen:
        raise CheckpointError(
            f"the layer globs (include={include}, exclude={list(exclude)}) match none of the "
            f"{len(names)} linear layers, e.g. {list(names[:4])}"
        )
    return chosen


def compress_checkpoint(
    folder: Path,
    out: Path,
    pattern: str = "2:4",
    rank: int = 0,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> Path:
    """Stream a local checkpoint through magnitude pruning + GLUESTICK into an artifact."""
    from vla_pruned_ros.compression.artifact import sha256_file
    from vla_pruned_ros.compression.streaming import safetensors_keys, stream_compress

    files = checkpoint_files(folder)
    meta = skeleton(folder, trust_remote_code, "meta")
    layers = select([n for n, m in meta.named_modules() if isinstance(m, nn.Linear)], include,
                    exclude)  # fmt: skip
    rename = model_keys(meta, [k for f in files for k in safetensors_keys(f)])
    config = json.loads((Path(folder) / "config.json").read_text())
    return stream_compress(
        files, layers, out, pattern=pattern, rank=rank,
        source_model=str(Path(folder).resolve()),
        source_sha256=sha256_file(files[0]) if len(files) == 1 else None,
        source_files={f.name: sha256_file(f) for f in files},
        model_config=config, trust_remote_code=trust_remote_code, rename=rename, **options,
    )  # fmt: skip


def rebuild_meta_buffers(model: nn.Module, config: Any, skip: str = "") -> None:
    """Non-persistent buffers (rotary frequency tables, position ids) are not in a checkpoint;
    rebuild the modules that own them, on the CPU, from whichever of the configs (the model's,
    its text or vision part) builds them."""
    candidates = [config]
    for attr in ("text_config", "vision_config"):
        if getattr(config, attr, None) is not None:
            candidates.append(getattr(config, attr))
    for name, module in list(model.named_modules()):
        if (skip and name.startswith(skip)) or not any(
            b.is_meta for b in module.buffers(recurse=False)
        ):
            continue
        fresh = None
        for cfg in candidates:
            try:
                built = type(module)(config=cfg)
            except (TypeError, AttributeError, ValueError):
                continue
            if all(
                built._buffers.get(k) is not None and built._buffers[k].shape == b.shape
                for k, b in module._buffers.items()
                if b is not None and b.is_meta
            ):
                fresh = built
                break
        if fresh is None:
            raise CheckpointError(
                f"cannot rebuild the buffers of {name} ({type(module).__name__}) off the meta "
                "device from the model's config"
            )
        for key, buf in list(module._buffers.items()):  # buffers only: weights stay loaded
            if buf is not None and buf.is_meta:
                module._buffers[key] = fresh._buffers[key]


def load_checkpoint_artifact(
    artifact: Path,
    mode: str = "materialize",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """An artifact made from a checkpoint folder, on the architecture its manifest records.

    The architecture is built on the meta device and the artifact's tensors are read one at a
    time into it, so a 7B artifact never costs a dense skeleton plus the loaded weights. `dtype`
    is the compute dtype (default float32; bfloat16 halves a large model's memory). An artifact
    of a remote-code architecture loads only with the loader's own `trust_remote_code=True`: a
    manifest never switches it on."""
    import tempfile

    from vla_pruned_ros.compression import load_artifact

    config_box: list[Any] = []

    def factory(manifest: dict[str, Any]) -> nn.Module:
        extra = manifest.get("extra", {})
        if extra.get("trust_remote_code") and not trust_remote_code:
            raise CheckpointError(
                f"{artifact} was made from a checkpoint whose code ships with it; loading it "
                "runs that code: pass trust_remote_code=True if you trust the source"
            )
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.json").write_text(json.dumps(extra["model_config"]))
            config, cls = architecture(Path(tmp), trust_remote_code)
        config_box.append(config)
        with torch.device("meta"):
            return cls(config)

    return load_artifact(artifact, factory, mode=mode, dtype=dtype or torch.float32,
                         finish=lambda m: rebuild_meta_buffers(m, config_box[0]))  # fmt: skip
