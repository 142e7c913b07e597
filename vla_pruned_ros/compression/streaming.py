"""Prune and correct a checkpoint tensor by tensor, straight from its safetensors shards to a
sharded artifact, never holding more than one layer (plus a bounded write buffer) in memory.

This is how a 7B checkpoint is compressed on a robot team's workstation: no second copy of the
model, no model instantiation. It supports what needs no activations (magnitude pruning, any
pattern, fixed-rank GLUESTICK); Wanda and SparseGPT need calibration activations and go through
the in-memory `prune()`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from vla_pruned_ros.compression.artifact import DTYPES, finalize, new_manifest
from vla_pruned_ros.compression.gluestick import GapFactors, gap_factors
from vla_pruned_ros.compression.memory import unmap_large_allocations
from vla_pruned_ros.compression.packing import pack, storage_kind
from vla_pruned_ros.compression.patterns import parse_pattern, prune_mask
from vla_pruned_ros.compression.quantize import check_factor_dtype, quantize
from vla_pruned_ros.compression.safetensors_io import iter_safetensors, safetensors_keys
from vla_pruned_ros.compression.spectrum import spectrum_stats


class ShardWriter:
    """Tensors of one kind, flushed to `<kind>-00001.safetensors`, ... at `limit` bytes."""

    def __init__(self, folder: Path, kind: str, limit: int) -> None:
        self.folder, self.kind, self.limit = folder, kind, limit
        self.tensors: dict[str, torch.Tensor] = {}
        self.size = 0
        self.count = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        self.tensors[key] = tensor.detach().cpu().contiguous()
        self.size += tensor.numel() * tensor.element_size()
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.tensors:
            return
        self.count += 1
        path = self.folder / f"{self.kind}-{self.count:05d}.safetensors"
        save_file(self.tensors, str(path), metadata={"format": "vla_pruned_ros.artifact/1",
                                                      "kind": self.kind})  # fmt: skip
        self.tensors, self.size = {}, 0


def open_writers(out: Path, overwrite: bool, shard_bytes: int) -> tuple[Path, dict]:
    """A scratch folder beside `out` (renamed into place by `finalize`) and one shard writer per
    tensor kind."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    kinds = ("pruned", "factors", "weights", "spectra")
    return tmp, {k: ShardWriter(tmp, k, shard_bytes) for k in kinds}


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

    unmap_large_allocations()
    pattern = parse_pattern(pattern)
    check_factor_dtype(factor_dtype)
    files = [Path(f) for f in weight_files]
    wanted = set(linear_names)
    out = Path(out)
    rename = rename or {}
    keys: dict[str, Path] = {}
    for f in files:
        keys.update(dict.fromkeys((rename.get(k, k) for k in safetensors_keys(f)), f))
    found = {k.removesuffix(".weight") for k in keys if k.endswith(".weight")} & wanted
    if not found:
        raise ValueError(f"none of the {len(wanted)} selected layers has a weight in {files}")
    target = DTYPES[weight_dtype] if weight_dtype else None
    tmp, writers = open_writers(out, overwrite, shard_bytes)
    entries: dict[str, dict[str, Any]] = {}
    kept = total = 0
    bar = tqdm(total=len(keys), desc=f"stream {pattern} r={rank}", unit="tensor",
               disable=not progress)  # fmt: skip
    try:
        for f in files:
            for raw, t in iter_safetensors(f):
                key = rename.get(raw, raw)
                name = key.removesuffix(".weight")
                if key.endswith(".weight") and name in found:
                    entry = _layer(name, t, pattern, rank, svd, factor_dtype, target, writers)
                    entry["bias"] = f"{name}.bias" in keys
                    entries[name] = entry
                    kept += entry["nonzero"]
                    total += t.numel()
                elif key.endswith(".bias") and key.removesuffix(".bias") in found:
                    writers["pruned"].add(key, _cast(t, target))
                else:
                    writers["weights"].add(key, _cast(t, target))
                del t
                bar.update(1)
        for w in writers.values():
            w.flush()
        manifest = new_manifest(entries, kept, total, weight_dtype, [], f"rank:{rank}",
                                {"method": "magnitude", **manifest_fields})  # fmt: skip
        finalize(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out


def _cast(t: torch.Tensor, target: torch.dtype | None) -> torch.Tensor:
    return t.to(target) if target is not None and t.is_floating_point() else t


def _layer(name, weight, pattern, rank, svd, factor_dtype, target, writers) -> dict[str, Any]:
    w = weight.float()
    pruned = torch.where(prune_mask(w.abs(), pattern), w, torch.zeros_like(w))
    return write_layer(name, weight, pruned, pattern, rank, svd, factor_dtype, target, writers,
                       "magnitude")  # fmt: skip


def write_layer(
    name: str,
    weight: torch.Tensor,
    pruned: torch.Tensor,
    pattern: Any,
    rank: int,
    svd: str,
    factor_dtype: str,
    target: torch.dtype | None,
    writers: dict[str, ShardWriter],
    method: str,
    factors: GapFactors | None = None,
) -> dict[str, Any]:
    """Pack one pruned layer and its rank-`rank` gap factors into the writers; its manifest
    entry. `weight` is the dense one (the gap is taken against it); `factors`, when given,
    are used instead of the plain SVD (the activation correction of the block-by-block path)."""
    if weight.dim() != 2:
        raise ValueError(f"layer {name}: weight of shape {tuple(weight.shape)} is not a matrix")
    if pattern.kind == "nm" and weight.shape[1] % pattern.m:
        raise ValueError(
            f"layer {name}: input dimension {weight.shape[1]} is not a multiple of M="
            f"{pattern.m} for {pattern}; exclude it"
        )
    w = weight.float()
    stored = _cast(pruned, target) if target is not None else pruned.to(weight.dtype)
    for k, v in pack(stored, pattern).items():
        writers["pruned"].add(f"{name}.{k}", v)
    entry: dict[str, Any] = {
        "shape": list(weight.shape),
        "pattern": str(pattern),
        "storage": storage_kind(pattern),
        "dtype": str(stored.dtype).removeprefix("torch."),
        "nonzero": int(stored.count_nonzero()),
        "rank": 0,
        "factor_dtype": factor_dtype,
        "method": method,
    }
    if rank:
        factors = factors or gap_factors(w, stored.float(), rank, svd=svd)
        entry["rank"] = factors.rank
        for key, tensor in (("a", factors.a), ("b", factors.b)):
            q, scale = quantize(tensor, factor_dtype)
            writers["factors"].add(f"{name}.{key}", q)
            writers["factors"].add(f"{name}.{key}_scale", scale)
        entry["spectrum"] = spectrum_stats(factors.singular_values, factors.rank)
        entry["spectrum"].update(svd=factors.svd, relative_error=round(factors.relative_error, 6),
                                 energy_kept=round(factors.energy_kept(), 6),
                                 correction=factors.correction)  # fmt: skip
        if factors.correction == "activation":
            entry["spectrum"]["damping"] = factors.damping
        writers["spectra"].add(name, factors.singular_values.float())
    del w, pruned
    return entry


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if os.name == "posix" else 0
