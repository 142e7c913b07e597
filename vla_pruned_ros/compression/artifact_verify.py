"""Trusting an artifact: its manifest's checksum, every file's sha256, no unlisted files, and the
shape and contents of each layer's entry and packed tensors, before a byte reaches a model.
Every refusal is an `ArtifactError` naming the file at fault."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from vla_pruned_ros.compression.artifact_layout import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ArtifactError,
    listing,
    manifest_checksum,
    sha256_file,
)
from vla_pruned_ros.compression.packing import index_bits, nm_indices_valid_sliced, storage_kind
from vla_pruned_ros.compression.patterns import parse_pattern


def read_manifest(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """The manifest of an artifact; with `verify`, every file's checksum is checked first."""
    folder = Path(path)
    file = folder / MANIFEST
    if not file.is_file():
        raise ArtifactError(f"{folder} is not an artifact: {MANIFEST} is missing")
    try:
        manifest = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{file} is corrupt: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{file} is not a {FORMAT} manifest")
    if manifest.get("manifest_sha256") != manifest_checksum(manifest):
        raise ArtifactError(f"{file} is corrupt: its checksum does not match its content")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{file} has format version {version}; this vla_pruned_ros reads {FORMAT_VERSION}"
        )
    if verify:
        for name, expected in manifest["files"].items():
            f = folder / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ArtifactError(f"{file} lists {name!r}, a path outside the artifact")
            if not f.is_file():
                raise ArtifactError(f"{f} is missing (listed in {MANIFEST})")
            if sha256_file(f) != expected:
                raise ArtifactError(f"{f} is corrupt: sha256 does not match {MANIFEST}")
        unlisted = sorted(set(listing(folder)) - set(manifest["files"]) - {MANIFEST})
        if unlisted:
            raise ArtifactError(
                f"{folder} holds files its {MANIFEST} does not list, refused (no checksum covers "
                f"them): {unlisted[:5]}{'...' if len(unlisted) > 5 else ''}; remove them or "
                "rebuild the artifact"
            )
    return manifest


_ENTRY_FIELDS = {"shape": list, "pattern": str, "storage": str, "bias": bool, "rank": int,
                 "factor_dtype": str}  # fmt: skip


def check_layer_entry(file: Path, name: str, entry: Any) -> None:
    """A manifest layer entry has the fields the loader reads, with their types."""
    if not isinstance(entry, dict):
        raise ArtifactError(f"{file}: layer {name!r} has no entry object")
    for key, kind in _ENTRY_FIELDS.items():
        if not isinstance(entry.get(key), kind):
            raise ArtifactError(f"{file}: layer {name!r} has no valid {key!r} field")
    if entry["storage"] != storage_kind(entry["pattern"]):
        raise ArtifactError(f"{file}: layer {name!r} storage {entry['storage']!r} does not fit "
                            f"its pattern {entry['pattern']!r}")  # fmt: skip


def check_packed(file: Path, name: str, packed: dict, pattern: str, shape: tuple) -> None:
    """The packed tensors of one layer are exactly what `pack` writes for `shape`: values of a
    float dtype, index/bitmask bytes of the right length, and N:M indices that name N distinct
    positions of each group in order (a duplicate would silently drop a weight)."""
    values = packed["values"]
    if not values.is_floating_point():
        raise ArtifactError(f"{file}: tensor {name}.values is {values.dtype}, not a float")
    p = parse_pattern(pattern)
    d_out, d_in = shape[0], math.prod(shape[1:])
    want = (d_out, d_in // p.m * p.n) if p.kind == "nm" else (values.numel(),)
    if tuple(values.shape) != want:
        raise ArtifactError(
            f"{file}: tensor {name}.values has shape {tuple(values.shape)}, expected {want} "
            f"for a {pattern} layer of shape {shape}"
        )
    key = "indices" if p.kind == "nm" else "bitmask"
    bits = packed[key]
    count = d_out * d_in // p.m * p.n if p.kind == "nm" else d_out * d_in
    width = index_bits(p.m) if p.kind == "nm" else 1
    need = math.ceil(count * width / 8)
    if bits.dtype != torch.uint8 or bits.dim() != 1 or bits.numel() != need:
        raise ArtifactError(
            f"{file}: tensor {name}.{key} is {bits.dtype} {tuple(bits.shape)}, expected "
            f"torch.uint8 ({need},) for a {pattern} layer of shape {shape}"
        )
    # a slice of groups at a time: never a byte per index of a whole layer beside the model
    # (pure PyTorch, so a materialize load never waits for the kernel to build)
    if p.kind == "nm" and count and not nm_indices_valid_sliced(bits, p.n, p.m, count // p.n):
        raise ArtifactError(
            f"{file}: tensor {name}.indices does not name {p.n} distinct positions in order "
            f"in every group of {p.m}"
        )
