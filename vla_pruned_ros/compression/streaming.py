"""Prune and correct a checkpoint tensor by tensor, straight from its safetensors shards to a
sharded artifact, never holding more than one layer (plus a bounded write buffer) in memory.

This is how a 7B checkpoint is compressed on a robot team's workstation: no second copy of the
model, no model instantiation. It supports what needs no activations (magnitude pruning, any
pattern, fixed-rank GLUESTICK); Wanda and SparseGPT need calibration activations and go through
the in-memory `prune()` or block by block (`blockwise.py`), which writes its layers with
`compress_layer` here. Every path writes through `artifact_write.ArtifactWriter`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from vla_pruned_ros.compression.artifact_layout import DTYPES
from vla_pruned_ros.compression.artifact_write import ArtifactWriter
from vla_pruned_ros.compression.gluestick import GapFactors, gap_factors
from vla_pruned_ros.compression.patterns import Pattern, parse_pattern, prune_mask
from vla_pruned_ros.compression.quantize import check_factor_dtype, quantize
from vla_pruned_ros.compression.safetensors_io import iter_safetensors, safetensors_keys

__all__ = ["compress_layer", "iter_safetensors", "peak_rss_bytes", "safetensors_keys",
           "stream_compress"]  # fmt: skip


def stream_compress(
    weight_files: Iterable[Path],
    linear_names: Iterable[str],
    out: Path,
    pattern: str = "2:4",
    rank: int = 0,
    svd: str = "randomized",
    factor_dtype: str = "float16",
    weight_dtype: str | None = "float16",
    shard_bytes: int = 64 * 2**20,
    overwrite: bool = False,
    progress: bool = True,
    rename: Mapping[str, str] | None = None,
    **manifest_fields: Any,
) -> Path:
    """Magnitude-prune the named linear layers (`<name>.weight` tensors) of a safetensors
    checkpoint to `pattern`, add rank-`rank` GLUESTICK factors, and write an artifact that
    `load_artifact` reads like any other. `rename` maps a file's key to the model's name for
    it where the two differ (legacy layouts); the artifact uses the model's names."""
    from tqdm import tqdm

    pattern = parse_pattern(pattern)
    check_factor_dtype(factor_dtype)
    files = [Path(f) for f in weight_files]
    wanted = set(linear_names)
    rename = rename or {}
    keys: dict[str, Path] = {}
    for f in files:
        keys.update(dict.fromkeys((rename.get(k, k) for k in safetensors_keys(f)), f))
    found = {k.removesuffix(".weight") for k in keys if k.endswith(".weight")} & wanted
    if not found:
        raise ValueError(f"none of the {len(wanted)} selected layers has a weight in {files}")
    target = DTYPES[weight_dtype] if weight_dtype else None
    bar = tqdm(total=len(keys), desc=f"stream {pattern} r={rank}", unit="tensor",
               disable=not progress)  # fmt: skip
    try:
        with ArtifactWriter(out, overwrite=overwrite, shard_bytes=shard_bytes) as writer:
            for f in files:
                for raw, t in iter_safetensors(f):
                    key = rename.get(raw, raw)
                    name = key.removesuffix(".weight")
                    if key.endswith(".weight") and name in found:
                        w = t.float()
                        pruned = torch.where(prune_mask(w.abs(), pattern), w, torch.zeros_like(w))
                        del w
                        compress_layer(writer, name, t, pruned, pattern, rank, svd, factor_dtype,
                                       target, "magnitude", f"{name}.bias" in keys)  # fmt: skip
                    elif key.endswith(".bias") and key.removesuffix(".bias") in found:
                        writer.add("pruned", key, _cast(t, target))
                    else:
                        writer.add("weights", key, _cast(t, target))
                    del t
                    bar.update(1)
            return writer.finish(weight_dtype, f"rank:{rank}",
                                 {"method": "magnitude", **manifest_fields})  # fmt: skip
    finally:
        bar.close()


def _cast(t: torch.Tensor, target: torch.dtype | None) -> torch.Tensor:
    return t.to(target) if target is not None and t.is_floating_point() else t


def compress_layer(
    writer: ArtifactWriter,
    name: str,
    weight: torch.Tensor,
    pruned: torch.Tensor,
    pattern: Pattern,
    rank: int,
    svd: str,
    factor_dtype: str,
    target: torch.dtype | None,
    method: str,
    has_bias: bool,
    factors: GapFactors | None = None,
) -> dict[str, Any]:
    """One pruned layer and its rank-`rank` gap factors into `writer` (the streaming and the
    block-by-block paths); its manifest entry. `weight` is the dense one (the gap is taken
    against it), `pruned` the same with zeros, stored as `target` (default: `weight`'s dtype);
    `factors`, when given, are used instead of the plain SVD (the activation correction of the
    block-by-block path). The bias is written by the caller (`has_bias` says there is one)."""
    if weight.dim() != 2:
        raise ValueError(f"layer {name}: weight of shape {tuple(weight.shape)} is not a matrix")
    if pattern.kind == "nm" and weight.shape[1] % pattern.m:
        raise ValueError(
            f"layer {name}: input dimension {weight.shape[1]} is not a multiple of M="
            f"{pattern.m} for {pattern}; exclude it"
        )
    stored = _cast(pruned, target) if target is not None else pruned.to(weight.dtype)
    stored_factors, spectrum, singular_values = None, None, None
    if rank:
        factors = factors or gap_factors(weight.float(), stored.float(), rank, svd=svd)
        stored_factors = {}
        for key, tensor in (("a", factors.a), ("b", factors.b)):
            stored_factors[key], stored_factors[f"{key}_scale"] = quantize(tensor, factor_dtype)
        spectrum = factors.spectrum()
        singular_values = factors.singular_values
    return writer.add_layer(
        name, stored, str(pattern), method=method, factor_dtype=factor_dtype,
        has_bias=has_bias, factors=stored_factors, spectrum=spectrum,
        singular_values=singular_values,
    )  # fmt: skip


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if os.name == "posix" else 0
