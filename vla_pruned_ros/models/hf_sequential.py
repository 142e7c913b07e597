"""Wanda and SparseGPT on a checkpoint too big to load twice: block by block, as the authors'
code does. The model is built on the meta device; only the parts outside the transformer blocks
(embeddings, rotary tables, final norm) are materialised. The inputs of the first block are caught
for every calibration sample; then each block in turn is loaded from the shards, its linear
layers' input statistics are gathered on those inputs, the layers are pruned (and corrected),
the block is run again pruned to give the next block its inputs, written, and freed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.artifact import DTYPES, finalize, new_manifest
from vla_pruned_ros.compression.calibration import InputStats
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.prune import pruned_weight
from vla_pruned_ros.compression.streaming import (
    iter_safetensors,
    open_writers,
    safetensors_keys,
    write_layer,
)
from vla_pruned_ros.models.hf_checkpoint import (
    CheckpointError,
    architecture,
    checkpoint_files,
    rebuild_meta_buffers,
    select,
)


class _Caught(Exception):
    pass


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's transformer blocks: the longest ModuleList named `layers` or `layer`."""
    found = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layers", "layer")
    ]
    if not found:
        raise CheckpointError("no transformer block list (a ModuleList named 'layers' or "
                              "'layer') in this architecture")  # fmt: skip
    return max(found, key=lambda nm: len(nm[1]))


def _set_tensor(model: nn.Module, key: str, value: torch.Tensor) -> None:
    module_name, _, leaf = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[leaf] = value


def sequential_compress(
    folder: Path,
    out: Path,
    method: str,
    pattern: str,
    rank: int,
    calib_ids: Sequence[torch.Tensor],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    svd: str = "randomized",
    factor_dtype: str = "float16",
    weight_dtype: str | None = "float16",
    shard_bytes: int = 64 * 2**20,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> Path:
    """Wanda / SparseGPT (or magnitude) block by block from a local checkpoint folder;
    `calib_ids` are token-id tensors (1 x T) the model's forward accepts."""
    from tqdm import tqdm

    if not calib_ids:
        raise CheckpointError(f"{method} needs calibration inputs (token ids)")
    pattern = parse_pattern(pattern)
    files = checkpoint_files(folder)
    config, cls = architecture(folder, trust_remote_code)
    with torch.device("meta"):
        model = cls(config)
    model.eval()
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = set(select(linear, include, exclude))
    prefix, blocks = block_list(model)
    keys = {}
    for f in files:
        keys.update(dict.fromkeys(safetensors_keys(f), f))
    outside = [k for k in keys if not k.startswith(f"{prefix}.")]
    stray = sorted(n for n in chosen if not n.startswith(f"{prefix}."))
    if stray:
        raise CheckpointError(f"layer-by-layer {method} prunes only inside {prefix}; exclude "
                              f"{stray[:3]}")  # fmt: skip
    by_file: dict[Path, list[str]] = {}
    for k in outside:
        by_file.setdefault(keys[k], []).append(k)
    for f, wanted in by_file.items():
        wanted_set = set(wanted)
        for key, t in iter_safetensors(f):
            if key in wanted_set:
                _set_tensor(model, key, t.float())
    _tie_missing(model)
    rebuild_meta_buffers(model, config, skip=prefix)

    caught: list[tuple[tuple, dict]] = []
    first = blocks[0]

    class Catcher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = first

        def forward(self, *args, **kwargs):
            caught.append((args, kwargs))
            raise _Caught

    blocks[0] = Catcher()
    with torch.no_grad():
        for ids in calib_ids:
            try:
                model(ids, use_cache=False)  # no cache: each block will run twice per sample
            except _Caught:
                pass
    blocks[0] = first

    target = DTYPES[weight_dtype] if weight_dtype else None
    out = Path(out)
    tmp, writers = open_writers(out, overwrite, shard_bytes)
    entries: dict[str, dict[str, Any]] = {}
    kept = total = 0
    try:
        for i in tqdm(range(len(blocks)), desc=f"{method} {pattern} block", disable=not progress):
            block_prefix = f"{prefix}.{i}."
            block = blocks[i]
            own = [k for k in keys if k.startswith(block_prefix)]
            by_file = {}
            for k in own:
                by_file.setdefault(keys[k], set()).add(k)
            for f, wanted in by_file.items():
                for key, t in iter_safetensors(f):
                    if key in wanted:
                        _set_tensor(model, key, t.float())
            names = [n for n in chosen if n.startswith(block_prefix)]
            stats, hooks = {}, []
            for n in names:
                layer = model.get_submodule(n)
                stats[n] = InputStats(layer.in_features, method == "sparsegpt")
                hooks.append(layer.register_forward_hook(
                    lambda _m, inp, _o, s=stats[n]: s.add(inp[0])))  # fmt: skip
            with torch.no_grad():
                for args, kwargs in caught:
                    block(*args, **kwargs)
            for h in hooks:
                h.remove()
            for n in sorted(names):
                layer = model.get_submodule(n)
                dense = layer.weight.detach().clone()
                pruned = pruned_weight(dense, method, pattern, stats[n])
                entry = write_layer(n, dense, pruned, pattern, rank, svd, factor_dtype, target,
                                    writers, method)  # fmt: skip
                entry["bias"] = f"{n}.bias" in keys
                entries[n] = entry
                kept, total = kept + entry["nonzero"], total + dense.numel()
                with torch.no_grad():
                    layer.weight.copy_(pruned)  # the next block sees the pruned block's output
            with torch.no_grad():
                new = []
                for args, kwargs in caught:
                    result = block(*args, **kwargs)
                    hidden = result[0] if isinstance(result, tuple) else result
                    new.append(((hidden, *args[1:]), kwargs))
                caught = new
            for k in sorted(own):
                name = k.rsplit(".", 1)[0]
                if name in entries and k.endswith(".weight"):
                    continue
                module_name, _, leaf = k.rpartition(".")
                t = getattr(model.get_submodule(module_name), leaf).detach()
                if name in entries and k.endswith(".bias"):
                    writers["pruned"].add(k, t.to(target) if target else t)
                else:
                    writers["weights"].add(k, t.to(target) if target and t.is_floating_point()
                                           else t)  # fmt: skip
            blocks[i] = block.to("meta")
        for k in outside:
            module_name, _, leaf = k.rpartition(".")
            t = getattr(model.get_submodule(module_name), leaf).detach()
            writers["weights"].add(k, t.to(target) if target and t.is_floating_point() else t)
        for w in writers.values():
            w.flush()
        import json

        manifest = new_manifest(entries, kept, total, weight_dtype, [], f"rank:{rank}", {
            "method": method,
            "source_model": str(Path(folder).resolve()),
            "model_config": json.loads((Path(folder) / "config.json").read_text()),
            "trust_remote_code": trust_remote_code,
            "calibration": {"samples": len(calib_ids), "order": "block by block, pruned inputs"},
        })  # fmt: skip
        finalize(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _tie_missing(model: nn.Module) -> None:
    """Tied output embeddings are stored once: point a still-meta lm_head at the input table."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return
    inp, outp = get_in(), get_out()
    if outp is not None and inp is not None and outp.weight.is_meta and not inp.weight.is_meta:
        outp.weight = inp.weight


def calibration_ids(
    folder: Path, texts: Path, trust_remote_code: bool = False, max_tokens: int = 256
) -> list[torch.Tensor]:
    """Token ids of each non-empty line of `texts`, with the checkpoint's own tokenizer."""
    from transformers import AutoTokenizer

    lines = [ln.strip() for ln in Path(texts).read_text().splitlines() if ln.strip()]
    if not lines:
        raise CheckpointError(f"{texts} holds no calibration text")
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                            trust_remote_code=trust_remote_code)  # fmt: skip
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{folder} has no usable tokenizer for --calib-texts: {err}"
        ) from None
    return [tok(line, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
            for line in lines]  # fmt: skip
