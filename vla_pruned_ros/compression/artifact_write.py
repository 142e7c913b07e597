"""The one artifact writer: every way of compressing (a model in memory with `save_artifact`, a
checkpoint streamed tensor by tensor, a checkpoint pruned block by block) writes its folder
through `ArtifactWriter`, so the files, the per-layer entries, the manifest and the checksums
are the same whichever path made them.

The folder is built in a scratch directory beside its destination and renamed into place at
the end (`artifact_layout.finalize`): an interrupted write leaves nothing at the destination.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.artifact_layout import (
    DTYPES,
    FILE_MODE,
    FOLDER_MODE,
    KINDS,
    LAYER_KEYS,
    MANIFEST,
    ArtifactError,
    file_metadata,
    finalize,
    layer_entry,
    new_manifest,
    sha256_file,
    shard_name,
    write_manifest,
)
from vla_pruned_ros.compression.artifact_verify import read_manifest
from vla_pruned_ros.compression.gluestick import GluestickConv2d
from vla_pruned_ros.compression.packing import pack
from vla_pruned_ros.compression.prune import compressed_layers
from vla_pruned_ros.paths import atomic_path

_ALWAYS_WRITTEN = ("pruned", "factors", "weights")  # in one-file mode, even when empty


class ArtifactWriter:
    """Writes one artifact folder: tensors by kind, pruned layers packed with their manifest
    entries, then `finish()` signs the manifest and moves the folder into place.

    `shard_bytes=None` writes one file per kind (`pruned.safetensors`, ...); a number splits
    each kind into shards of about that many bytes (`pruned-00001.safetensors`, ...), so a
    7B checkpoint streams through a bounded buffer. Use it as a context manager: an exception
    removes the scratch folder and leaves the destination as it was."""

    def __init__(
        self, out: str | os.PathLike, *, overwrite: bool = False, shard_bytes: int | None = None
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()) and not overwrite:
            raise ArtifactError(
                f"{self.out} exists and is not empty (pass overwrite=True to replace it)"
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        self.shard_bytes = shard_bytes
        self.entries: dict[str, dict[str, Any]] = {}
        self.kept = self.total = 0
        self._tensors: dict[str, dict[str, torch.Tensor]] = {k: {} for k in KINDS}
        self._size = dict.fromkeys(KINDS, 0)
        self._shards = dict.fromkeys(KINDS, 0)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.abort()

    def add(self, kind: str, key: str, tensor: torch.Tensor) -> None:
        """One tensor of `kind` ('pruned', 'factors', 'weights', 'spectra')."""
        self._tensors[kind][key] = tensor.detach().cpu().contiguous()
        self._size[kind] += tensor.numel() * tensor.element_size()
        if self.shard_bytes is not None and self._size[kind] >= self.shard_bytes:
            self._flush(kind)

    def add_layer(
        self,
        name: str,
        weight: torch.Tensor,
        pattern: str,
        *,
        method: str,
        factor_dtype: str,
        bias: torch.Tensor | None = None,
        has_bias: bool | None = None,
        factors: dict[str, torch.Tensor] | None = None,
        spectrum: dict[str, Any] | None = None,
        singular_values: torch.Tensor | None = None,
        conv: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A pruned layer: `weight` (dense with zeros, in the dtype it is stored in) packed to
        `pattern`, its bias, its factors (a, b, a_scale, b_scale as stored) and gap spectrum;
        returns its manifest entry. `has_bias` says a bias exists that is written separately
        (the streaming path meets it later in the checkpoint)."""
        for key, t in pack(weight, pattern).items():
            self.add("pruned", f"{name}.{key}", t)
        if bias is not None:
            self.add("pruned", f"{name}.bias", bias)
        rank = 0
        if factors:
            rank = int(factors["a"].shape[1])
            for key in ("a", "b", "a_scale", "b_scale"):
                self.add("factors", f"{name}.{key}", factors[key])
        if singular_values is not None:
            self.add("spectra", name, singular_values.float())
        nonzero = int(weight.count_nonzero())
        self.kept, self.total = self.kept + nonzero, self.total + weight.numel()
        entry = layer_entry(
            weight.shape, pattern, weight.dtype, bias is not None if has_bias is None else has_bias,
            nonzero, rank, factor_dtype, method, spectrum, conv,
        )  # fmt: skip
        self.entries[name] = entry
        return entry

    def _flush(self, kind: str) -> None:
        from safetensors.torch import save_file

        tensors = self._tensors[kind]
        if self.shard_bytes is None:
            if not tensors and kind not in _ALWAYS_WRITTEN:
                return
            name = f"{kind}.safetensors"
        else:
            if not tensors:
                return
            self._shards[kind] += 1
            name = shard_name(kind, self._shards[kind])
        save_file(tensors, str(self.tmp / name), metadata=file_metadata(kind))
        self._tensors[kind], self._size[kind] = {}, 0

    def finish(
        self,
        weight_dtype: str | None,
        rank_policy: str,
        fields: dict[str, Any],
        provided_by_factory: Iterable[str] = (),
    ) -> Path:
        """Write what is buffered, sign the manifest (`fields` as `new_manifest` takes them)
        and move the folder into place; returns it."""
        for kind in KINDS:
            self._flush(kind)
        manifest = new_manifest(self.entries, self.kept, self.total, weight_dtype,
                                sorted(provided_by_factory), rank_policy, fields)  # fmt: skip
        return finalize(self.tmp, self.out, manifest)

    def abort(self) -> None:
        """Remove the scratch folder (nothing was moved into place)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def save_artifact(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    weight_dtype: str | None = None,
    skip_keys: Iterable[str] = (),
    overwrite: bool = False,
    **manifest_fields: Any,
) -> Path:
    """Write `model` (its pruned layers packed) as an artifact folder; returns the folder.

    `weight_dtype` ('float16', ...) converts stored weights; by default they keep their dtype,
    so the round trip is bit-exact. `skip_keys` are state-dict entries the loader's
    model_factory provides itself (e.g. a frozen embedding table shipped elsewhere).
    Other keywords (source_model, source_sha256, method, ...) go into the manifest as given.
    """
    layers = compressed_layers(model)
    if not layers and "structure" not in manifest_fields:
        raise ArtifactError(
            "the model has no pruned layers: save a model returned by prune(), or pass the "
            "structure= of a structurally pruned one"
        )
    target = DTYPES[weight_dtype] if weight_dtype else None

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(target) if target is not None and t.is_floating_point() else t

    with ArtifactWriter(path, overwrite=overwrite) as writer:
        for name, layer in layers.items():
            if not layer.pattern:
                raise ArtifactError(f"layer {name} does not record its sparsity pattern")
            factors = None
            if layer.rank:
                factors = {k: getattr(layer, k) for k in ("a", "b", "a_scale", "b_scale")}
                if layer.factor_dtype != "int8":
                    factors.update(a=cast(factors["a"]), b=cast(factors["b"]))
            conv = None
            if isinstance(layer, GluestickConv2d):
                conv = {"stride": list(layer.stride), "dilation": list(layer.dilation),
                        "padding": layer.padding if isinstance(layer.padding, str)
                        else list(layer.padding)}  # fmt: skip
            writer.add_layer(
                name, cast(layer.dense_weight().detach()), layer.pattern, method=layer.method,
                factor_dtype=layer.factor_dtype,
                bias=None if layer.bias is None else cast(layer.bias), factors=factors,
                spectrum=layer.spectrum, singular_values=layer.singular_values, conv=conv,
            )  # fmt: skip
        in_layers = {f"{n}.{k}" for n in layers for k in LAYER_KEYS}
        skip = set(skip_keys)
        for k, v in model.state_dict().items():
            if k not in in_layers and k not in skip:
                writer.add("weights", k, cast(v))
        fields = {"correction": getattr(model, "correction", {"correction": "svd"}),
                  **manifest_fields}  # fmt: skip
        return writer.finish(weight_dtype, getattr(model, "rank_policy", "rank:0"), fields, skip)


def attach_files(
    path: str | os.PathLike,
    files: dict[str, Path],
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Copy `files` ({name in the artifact: source file}) into a finished artifact, checksum
    them like every tensor, merge `source`/`extra` into its manifest and sign it again: what
    deployment needs beside the tensors (a checkpoint's processor, tokenizer and code). The
    manifest is replaced last, so an interrupted copy leaves unlisted files, which loading
    refuses."""
    folder = Path(path)
    manifest = read_manifest(folder, verify=True)
    for name, src in sorted(files.items()):
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or name == MANIFEST:
            raise ArtifactError(f"cannot attach {name!r}: not a plain path inside the artifact")
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        for d in [rel, *rel.parents]:  # relative parts: folder itself may be a relative path
            os.chmod(folder / d, FOLDER_MODE if (folder / d).is_dir() else FILE_MODE)
        manifest["files"][rel.as_posix()] = sha256_file(dest)
    manifest["source"] = {**manifest.get("source", {}), **(source or {})}
    manifest["extra"] = {**manifest.get("extra", {}), **(extra or {})}
    with atomic_path(folder / MANIFEST) as tmp:
        write_manifest(tmp, manifest)
    return folder
