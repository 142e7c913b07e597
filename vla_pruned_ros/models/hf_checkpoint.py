"""A user's own checkpoint from a local Hugging Face folder: never a hub, never pickle.

`checkpoint_files` finds the safetensors weights (single file or sharded index),
`linear_layers` lists the model's nn.Linear modules by building the architecture on the meta
device (no memory, no weights), and `default_exclude` follows the paper: compress the language
backbone, skip the vision tower, the projector, the embeddings and the heads.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# What each family keeps dense by default (the README's "Bring your own VLA" table; checked by
# test/compression/test_families.py): heads, embeddings, vision towers (`vision_tower`,
# `vision_model`, Qwen's `visual`), and what connects them to the language model (LLaVA's and
# PaliGemma's `multi_modal_projector`, Idefics3/SmolVLM's `connector.modality_projection`,
# Qwen2.5-VL's `visual.merger`).
DEFAULT_EXCLUDE = ("*lm_head*", "*embed*", "*vision*", "*visual*", "*projector*", "*connector*",
                   "*merger*", "*action_head*", "*pooler*", "*classifier*")  # fmt: skip


class OnlyExclude(tuple):
    """An exclude list that replaces `DEFAULT_EXCLUDE` instead of adding to it
    (`vla-prune --no-default-exclude`)."""


class CheckpointError(ValueError):
    """A folder that cannot be compressed as given; the message says what to change."""


def missing_package(what: str, err: ImportError) -> CheckpointError:
    """The error for a processor or model that needs a package this environment lacks, naming
    the package to install (transformers says "X requires the Torchvision library")."""
    found = re.search(r"requires the (\w[\w.-]*) library", str(err))
    name = found.group(1).lower() if found else (getattr(err, "name", None) or "")
    name = name.split(".")[0]
    if not name:
        return CheckpointError(f"{what} needs a package that is not installed: {err}")
    return CheckpointError(
        f"{what} needs the Python package {name!r}, which is not installed here: pip install {name}"
    )


def is_hf_folder(folder: Path) -> bool:
    """A Hugging Face model folder (its config names a `model_type`; the embedded VLA's has
    none): what sends a folder down the checkpoint path in `vla-prune` and `vla-eval sweep`.
    Here, with the checkpoint code, so evaluation asks it without importing the CLI layer."""
    config = folder / "config.json"
    try:
        return config.is_file() and "model_type" in json.loads(config.read_text())
    except ValueError:
        return False


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
        if trust_remote_code:  # the caller's explicit opt-in
            remote = remote_model_class(folder, config)
            if remote is not None:
                return config, remote
            with torch.device("meta"):  # built on meta to learn its class
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
            return config, type(model)
        cls = AutoModel._model_mapping[type(config)]
    return config, cls


_AUTO_MODEL_ORDER = ("AutoModel", "AutoModelForVision2Seq", "AutoModelForImageTextToText",
                     "AutoModelForCausalLM", "AutoModelForSeq2SeqLM")  # fmt: skip


def remote_model_class(folder: Path, config: Any) -> type | None:
    """The model class a remote-code checkpoint's `auto_map` names (its own code, loaded only
    because the caller opted in): the entry whose class is in `architectures`, else the first
    model entry of `_AUTO_MODEL_ORDER`. OpenVLA's names `AutoModelForVision2Seq` and no
    `AutoModel`, and transformers 5 has no AutoModelForVision2Seq, so the entry is read here
    rather than through an Auto class."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = getattr(config, "auto_map", None) or {}
    models = {k: v for k, v in auto_map.items() if k.startswith("AutoModel")}
    if not models:
        return None
    names = set(getattr(config, "architectures", None) or [])
    refs = [v if isinstance(v, str) else v[0] for v in models.values()]
    ref = next((r for r in refs if r.rsplit(".", 1)[-1] in names), None)
    ref = ref or next((models[k] for k in _AUTO_MODEL_ORDER if k in models), refs[0])
    ref = ref if isinstance(ref, str) else ref[0]
    return get_class_from_dynamic_module(ref, str(folder), local_files_only=True)


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
    """Layers the globs select. `exclude` adds to the paper's default excludes
    (`DEFAULT_EXCLUDE`), so following an error's advice to exclude one more layer never
    re-enables the vision tower; an `OnlyExclude` list replaces them."""
    if isinstance(exclude, OnlyExclude):
        exclude = tuple(exclude)
    else:
        exclude = (*DEFAULT_EXCLUDE, *(exclude or ()))
    chosen = [
        n for n in names
        if (not include or any(fnmatch.fnmatch(n, g) for g in include))
        and not any(fnmatch.fnmatch(n, g) for g in exclude)
    ]  # fmt: skip
    if not chosen:
        raise CheckpointError(
            f"the layer globs (include={include}, exclude={list(exclude)}) match none of the "
            f"{len(names)} linear layers, e.g. {list(names[:4])} (--no-default-exclude drops "
            "the default excludes)"
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
    adapter: str | None = None,
    adapter_options: dict[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Stream a local checkpoint through magnitude pruning + GLUESTICK into an artifact that
    carries what deployment needs (`attach_deployment`)."""
    from vla_pruned_ros.compression.artifact_layout import sha256_file
    from vla_pruned_ros.compression.streaming import safetensors_keys, stream_compress

    files = checkpoint_files(folder)
    meta = skeleton(folder, trust_remote_code, "meta")
    layers = select([n for n, m in meta.named_modules() if isinstance(m, nn.Linear)], include,
                    exclude)  # fmt: skip
    rename = model_keys(meta, [k for f in files for k in safetensors_keys(f)])
    config = json.loads((Path(folder) / "config.json").read_text())
    written = stream_compress(
        files, layers, out, pattern=pattern, rank=rank,
        source_files={f.name: sha256_file(f) for f in files},
        model_config=config, trust_remote_code=trust_remote_code, rename=rename, **options,
    )  # fmt: skip
    return attach_deployment(written, folder, adapter, adapter_options)


_DEPLOY_SUFFIXES = (".json", ".py", ".model", ".txt", ".jinja", ".tiktoken")
_NOT_DEPLOYED = ("model.safetensors.index.json", "manifest.json")


def deployment_files(folder: Path) -> dict[str, Path]:
    """{name in the artifact: file} for what deployment needs beside the weights: config,
    generation config, processor, tokenizer (json, sentencepiece model, vocab/merges, chat
    template) and the remote-code modules (`configuration_*.py`, `modeling_*.py`,
    `processing_*.py`, and any module they import from the folder). They sit at the artifact's
    top level, beside the manifest, so `AutoProcessor.from_pretrained(ART)` and
    `AutoConfig.from_pretrained(ART)` read them as they would the checkpoint's folder."""
    return {
        f.name: f
        for f in sorted(Path(folder).iterdir())
        if f.is_file() and f.suffix in _DEPLOY_SUFFIXES and f.name not in _NOT_DEPLOYED
    }


def source_identity(folder: Path, files: Sequence[Path]) -> dict[str, Any]:
    """The source model's name (its config's `_name_or_path` when that is a hub name, else the
    folder's name: never an absolute path of the machine that compressed it) and the sha256
    of its weights (of the one file, or of the sorted `name sha256` lines of its shards)."""
    from vla_pruned_ros.compression.artifact_layout import sha256_file

    config = json.loads((Path(folder) / "config.json").read_text())
    name = config.get("_name_or_path") or ""
    if not name or Path(name).is_absolute() or name.startswith("."):
        name = Path(folder).resolve().name
    shas = {f.name: sha256_file(f) for f in files}
    if len(shas) == 1:
        digest = next(iter(shas.values()))
    else:
        lines = "".join(f"{n} {h}\n" for n, h in sorted(shas.items()))
        digest = hashlib.sha256(lines.encode()).hexdigest()
    return {"model_id": name, "sha256": digest}


def action_info(config: dict[str, Any]) -> dict[str, Any] | None:
    """Action statistics and bounds where the checkpoint has them: OpenVLA's `norm_stats`
    ({dataset: {"action": {q01, q99, mean, std, mask, ...}}}), and `action_names` if given."""
    stats = config.get("norm_stats")
    if not isinstance(stats, dict) or not stats:
        return None
    bounds = {}
    for key, entry in stats.items():
        action = entry.get("action", {}) if isinstance(entry, dict) else {}
        if "q01" in action and "q99" in action:
            bounds[key] = {"low": action["q01"], "high": action["q99"]}
    return {"norm_stats": stats, "bounds": bounds, "names": config.get("action_names")}


def attach_deployment(
    artifact: Path,
    folder: Path,
    adapter: str | None = None,
    adapter_options: dict[str, Any] | None = None,
) -> Path:
    """Put what `artifact: ART` alone needs to deploy into an artifact made from `folder`: the
    checkpoint's config/processor/tokenizer/code files (checksummed), the source's name and
    weight sha256, action statistics and the adapter with its options (`openvla` by default
    for a checkpoint with `norm_stats`, its only `unnorm_key` filled in)."""
    from vla_pruned_ros.compression.artifact_write import attach_files

    config = json.loads((Path(folder) / "config.json").read_text())
    actions = action_info(config)
    options = dict(adapter_options or {})
    if adapter is None and actions is not None:
        adapter = "openvla"
        if len(actions["norm_stats"]) == 1:
            options.setdefault("unnorm_key", next(iter(actions["norm_stats"])))
    files = deployment_files(folder)
    return attach_files(
        artifact,
        files,
        source=source_identity(folder, checkpoint_files(folder)),
        extra={
            "deploy": {
                "files": sorted(files),
                "remote_code": sorted(n for n in files if n.endswith(".py")),
                "adapter": {"name": adapter, "options": options},
                "actions": actions,
            }
        },
    )


def deployment_folder(artifact: Path) -> Path | None:
    """The folder holding the checkpoint files an artifact carries (its config, processor and
    tokenizer: the artifact itself), or None for an artifact written before they were
    carried."""
    folder = Path(artifact)
    return folder if (folder / "config.json").is_file() else None


def rebuild_meta_buffers(model: nn.Module, config: Any, skip: str = "") -> None:
    """Non-persistent buffers (rotary frequency tables, position ids) are not in a checkpoint;
    rebuild the modules that own them, on the CPU, from whichever of the configs (the model's,
    its text or vision part) builds them."""
    candidates = [config]
    for attr in ("text_config", "vision_config"):
        if getattr(config, attr, None) is not None:
            candidates.append(getattr(config, attr))
    whole: dict[str, torch.Tensor] | None = None  # the model's own buffers, built once if needed
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
        if fresh is None:  # a module not built from a config alone (Gemma's scaled embedding)
            whole = whole if whole is not None else model_buffers(type(model), config)
            prefix = f"{name}." if name else ""
            wanted = [k for k, b in module._buffers.items() if b is not None and b.is_meta]
            if not all(prefix + k in whole for k in wanted):
                raise CheckpointError(
                    f"cannot rebuild the buffers of {name} ({type(module).__name__}) off the "
                    "meta device from the model's config"
                )
            for key in wanted:
                module._buffers[key] = whole[prefix + key]
            continue
        for key, buf in list(module._buffers.items()):  # buffers only: weights stay loaded
            if buf is not None and buf.is_meta:
                module._buffers[key] = fresh._buffers[key]


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device but their buffers real: the
    buffers a constructor computes (Gemma's `embed_scale`, rotary tables) come out right while
    no weight memory is spent (each parameter is moved to meta as it is registered)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            kind = type(module._parameters[name])
            module._parameters[name] = kind(
                module._parameters[name].to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def model_buffers(cls: type, config: Any) -> dict[str, torch.Tensor]:
    """Every buffer of a fresh `cls(config)`, by name, without its weights' memory."""
    with parameters_on_meta():
        fresh = cls(config)
    return {k: b for k, b in fresh.named_buffers(remove_duplicate=False) if not b.is_meta}


def load_checkpoint_artifact(
    artifact: Path,
    mode: str | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """An artifact made from a checkpoint folder, on the architecture its manifest records.

    The architecture is built on the meta device and the artifact's tensors are read one at a
    time into it, so a 7B artifact never costs a dense skeleton plus the loaded weights. `dtype`
    is the compute dtype (default float32; bfloat16 halves a large model's memory); `mode` the
    runtime mode of its pruned layers (default `auto`: sparse on CPU). An artifact
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
        carried = deployment_folder(Path(artifact))
        if carried is not None:  # its config and code, checksummed with the tensors
            config, cls = architecture(carried, trust_remote_code)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "config.json").write_text(json.dumps(extra["model_config"]))
                config, cls = architecture(Path(tmp), trust_remote_code)
        config_box.append(config)
        with torch.device("meta"):
            return cls(config)

    return load_artifact(artifact, factory, mode=mode, dtype=dtype or torch.float32,
                         finish=lambda m: rebuild_meta_buffers(m, config_box[0]))  # fmt: skip
