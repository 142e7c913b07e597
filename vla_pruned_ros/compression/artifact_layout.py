"""The artifact's layout: the one place that names its format, files, manifest and checksums.

    manifest.json        format and package version, source model and its sha256, method,
                         pattern, sparsity, rank policy, per-layer ranks/dtypes/spectra, the
                         units a structured pruning removed (`structure`, applied by the
                         model factory), the sha256 of every tensor file, and a checksum of the
                         manifest itself
    pruned.safetensors   per pruned layer: packed values + 2-bit indices (N:M) or a bitmask
                         (unstructured), and the bias
    factors.safetensors  per corrected layer: A, B and their scales
    weights.safetensors  everything else in the state dict
    spectra.safetensors  the gap singular values of each corrected layer (for vla-inspect)

A large model's tensors of one kind may be split into shards (`pruned-00001.safetensors`, ...);
readers treat the shards of a kind like its single file. Writers go through `artifact_write`,
readers through `artifact_verify` and `artifact_load`; they meet only here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from vla_pruned_ros.compression.packing import storage_kind

FORMAT = "vla_pruned_ros.artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("pruned", "factors", "weights", "spectra")
PRUNED, FACTORS, WEIGHTS, SPECTRA = (f"{kind}.safetensors" for kind in KINDS)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FILE_MODE, FOLDER_MODE = 0o644, 0o755  # readable by the user a node runs as, writable by owner
LAYER_KEYS = ("weight", "bias", "a", "b", "a_scale", "b_scale", "values", "indices", "bitmask")


class ArtifactError(ValueError):
    """An artifact that cannot be trusted or does not fit the model; the message names the file."""


def file_metadata(kind: str) -> dict[str, str]:
    """The safetensors header metadata of every tensor file of an artifact: one key, because
    safetensors writes the metadata in hash-map order, so with two keys the same tensors saved
    twice gave files that differ in bytes and in their manifest checksums (artifacts before
    2026-12-02 carry `format` and `kind` apart; no reader uses either)."""
    return {"format": f"{FORMAT}/{FORMAT_VERSION} {kind}"}


def shard_name(kind: str, index: int) -> str:
    """The name of a kind's `index`-th shard (from 1)."""
    return f"{kind}-{index:05d}.safetensors"


def kind_files(folder: Path, name: str, manifest: dict[str, Any]) -> list[Path]:
    """The files holding one kind of tensors (`name` itself, or its shards), among those the
    manifest lists (and so checksums), in order."""
    stem = name.removesuffix(".safetensors")
    shard = re.compile(rf"{re.escape(stem)}-\d{{5}}\.safetensors")
    return [folder / f for f in sorted(manifest["files"]) if f == name or shard.fullmatch(f)]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file, read in chunks (a 7B shard is never read whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def canonical(manifest: dict) -> bytes:
    """The bytes the manifest's own checksum covers: everything but that checksum."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def manifest_checksum(manifest: dict) -> str:
    return hashlib.sha256(canonical(manifest)).hexdigest()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def layer_entry(
    shape: tuple[int, ...] | list[int],
    pattern: str,
    dtype: torch.dtype,
    bias: bool,
    nonzero: int,
    rank: int,
    factor_dtype: str,
    method: str,
    spectrum: dict[str, Any] | None = None,
    conv: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest entry of one pruned layer, the fields `artifact_verify` checks and the
    loader reads (`conv` only for a Conv2d: stride, dilation, padding)."""
    entry: dict[str, Any] = {
        "shape": list(shape),
        "pattern": str(pattern),
        "storage": storage_kind(pattern),
        "dtype": dtype_name(dtype),
        "bias": bool(bias),
        "nonzero": int(nonzero),
        "rank": int(rank),
        "factor_dtype": factor_dtype,
        "method": method,
    }
    if spectrum:
        entry["spectrum"] = spectrum
    if conv is not None:
        entry["conv"] = conv
    return entry


def new_manifest(
    entries: dict[str, dict],
    kept: int,
    total: int,
    weight_dtype: str | None,
    provided_by_factory: list[str],
    rank_policy: str,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of an artifact (before `finalize` adds the checksums): the one place its
    fields are named."""
    from vla_pruned_ros import __version__

    fields = dict(fields)
    methods = sorted({e["method"] for e in entries.values() if e["method"]})
    patterns = sorted({e["pattern"] for e in entries.values()})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": {
            "model_id": fields.pop("source_model", None),
            "sha256": fields.pop("source_sha256", None),
        },
        "method": fields.pop("method", methods[0] if len(methods) == 1 else methods),
        "pattern": fields.pop("pattern", patterns[0] if len(patterns) == 1 else patterns),
        "sparsity": round(1 - kept / total, 6) if total else 0.0,
        "structure": fields.pop("structure", None),
        "rank_policy": fields.pop("rank_policy", rank_policy),
        "weight_dtype": weight_dtype,
        "layers": entries,
        "provided_by_factory": provided_by_factory,
        "extra": fields,
        "files": {},
    }


def listing(folder: Path) -> list[str]:
    """Every file under `folder`, as the manifest names it (a relative POSIX path)."""
    return sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*") if not f.is_dir())


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Sign `manifest` (its checksum over everything else) and write it to `path`."""
    manifest["manifest_sha256"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.chmod(path, FILE_MODE)


def finalize(tmp: Path, out: Path, manifest: dict[str, Any]) -> Path:
    """Checksum every file in `tmp` (sub-folders included), write the signed manifest, make it
    all readable by other users (files 0644, folders 0755: a node may run as another user than
    the one who compressed), and move `tmp` to `out` in one rename (a reader never sees half an
    artifact)."""
    manifest["files"] = {name: sha256_file(tmp / name) for name in listing(tmp)}
    write_manifest(tmp / MANIFEST, manifest)
    for f in [tmp, *tmp.rglob("*")]:
        os.chmod(f, FOLDER_MODE if f.is_dir() else FILE_MODE)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
