"""GLUESTICK factors added to an artifact that is already pruned, from the dense checkpoint it was
pruned from: prune once, correct at every rank and factor dtype.

Pruning a checkpoint (streamed tensor by tensor, or block by block on calibration inputs) is
the expensive, calibration-dependent step; the SVD correction only needs each layer's dense
weight and its stored pruned weight. So a table of ranks and factor dtypes prunes once
(`vla-prune --rank 0`, or the sweep) and derives every corrected artifact from that one pruned
artifact here: its pruned tensors are copied as stored (the same bytes in every derived
artifact), its other tensors and deployment files too, and each layer's factors are taken
against the dense weight read from the checkpoint one tensor at a time, exactly as the
streaming path computes them. Torch only; the caller names the checkpoint's files and its
key renaming (`models.hf_checkpoint` knows a checkpoint folder).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vla_pruned_ros.compression.artifact_layout import (
    DTYPES,
    KINDS,
    MANIFEST,
    ArtifactError,
    kind_files,
)
from vla_pruned_ros.compression.artifact_verify import read_manifest
from vla_pruned_ros.compression.artifact_write import ArtifactWriter, attach_files
from vla_pruned_ros.compression.packing import unpack
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.safetensors_io import TensorFiles, iter_safetensors
from vla_pruned_ros.compression.streaming import compress_layer

_PACKED_KEYS = ("values", "indices", "bitmask")


def _tensor_files(folder: Path, kind: str, manifest: dict[str, Any]) -> TensorFiles:
    return TensorFiles(kind_files(folder, f"{kind}.safetensors", manifest))


def derive_corrected(
    pruned_artifact: Path,
    dense_files: Iterable[Path],
    out: Path,
    rank: int,
    svd: str = "exact",
    factor_dtype: str = "float16",
    rename: Mapping[str, str] | None = None,
    shard_bytes: int | None = 64 * 2**20,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """A rank-`rank` GLUESTICK artifact from a pruned (rank 0) one and the dense safetensors
    files it was made from (`rename`: a file key -> the model's name, as when it was pruned).
    The manifest records `extra.pruned_from` (the pruned artifact's name and manifest sha256)
    so every corrected artifact says which pruning it shares."""
    from tqdm import tqdm

    from vla_pruned_ros.compression.artifact_layout import sha256_file

    if rank < 1:
        raise ValueError(f"derive_corrected needs a rank >= 1, not {rank}")
    folder = Path(pruned_artifact)
    manifest = read_manifest(folder, verify=True)
    layers: dict[str, dict[str, Any]] = manifest["layers"]
    if any(int(e.get("rank", 0)) for e in layers.values()):
        raise ArtifactError(f"{folder} already carries GLUESTICK factors; derive from the "
                            "plain pruned artifact (rank 0)")  # fmt: skip
    if any("conv" in e for e in layers.values()):
        raise ArtifactError(f"{folder} has pruned Conv2d layers; derive supports Linear only")
    pruned = _tensor_files(folder, "pruned", manifest)
    weights = _tensor_files(folder, "weights", manifest)
    rename = dict(rename or {})
    wanted = {f"{name}.weight" for name in layers}
    target = DTYPES[manifest["weight_dtype"]] if manifest.get("weight_dtype") else None
    tensor_files = {p.name for kind in KINDS for p in kind_files(folder, f"{kind}.safetensors",
                                                                  manifest)}  # fmt: skip
    carried = {n: folder / n for n in manifest["files"]
               if n not in tensor_files and n != MANIFEST}  # fmt: skip
    done: set[str] = set()
    bar = tqdm(total=len(layers), desc=f"derive r={rank} {factor_dtype}", unit="layer",
               disable=not progress)  # fmt: skip
    try:
        with ArtifactWriter(out, overwrite=overwrite, shard_bytes=shard_bytes) as writer:
            for f in dense_files:
                raw = {k for k in _keys(f) if rename.get(k, k) in wanted}
                for key, dense in iter_safetensors(f, only=raw):
                    name = rename.get(key, key).removesuffix(".weight")
                    entry = layers[name]
                    packed = {k: pruned[f"{name}.{k}"] for k in _PACKED_KEYS
                              if f"{name}.{k}" in pruned}  # fmt: skip
                    stored = unpack(packed, entry["pattern"], tuple(entry["shape"]))
                    compress_layer(writer, name, dense, stored, parse_pattern(entry["pattern"]),
                                   rank, svd, factor_dtype, target or stored.dtype,
                                   entry["method"], bool(entry["bias"]))  # fmt: skip
                    if entry["bias"]:
                        writer.add("pruned", f"{name}.bias", pruned[f"{name}.bias"])
                    done.add(name)
                    bar.update(1)
            missing = sorted(set(layers) - done)
            if missing:
                raise ArtifactError(f"the dense files hold no weight for {len(missing)} pruned "
                                    f"layers of {folder}, e.g. {missing[:3]}")  # fmt: skip
            for key in sorted(weights.keys()):
                writer.add("weights", key, weights[key])
            extra = {k: v for k, v in manifest.get("extra", {}).items() if k != "deploy"}
            source = manifest.get("source") or {}
            fields = {
                **extra,
                "method": manifest.get("method"),
                "source_model": source.get("model_id"),
                "source_sha256": source.get("sha256"),
                "pruned_from": {
                    "artifact": folder.name,
                    "manifest_sha256": sha256_file(folder / MANIFEST),
                },
            }
            written = writer.finish(manifest.get("weight_dtype"), f"rank:{rank}", fields,
                                    manifest.get("provided_by_factory", ()))  # fmt: skip
    finally:
        bar.close()
    deploy = (manifest.get("extra") or {}).get("deploy")
    return attach_files(written, carried, source=source,
                        extra={"deploy": deploy} if deploy is not None else None)  # fmt: skip


def _keys(path: Path) -> list[str]:
    from vla_pruned_ros.compression.safetensors_io import safetensors_keys

    return list(safetensors_keys(path))
