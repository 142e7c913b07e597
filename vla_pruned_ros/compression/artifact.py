"""The compressed artifact: a folder of safetensors files and a JSON manifest (no pickle).

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

Loading checks every checksum before it trusts a byte and names the file at fault. This module
is the one place that knows the layout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.gluestick import GluestickConv2d, GluestickLinear
from vla_pruned_ros.compression.memory import unmap_large_allocations
from vla_pruned_ros.compression.packing import index_bits, pack, storage_kind, unpack, unpack_bits
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.prune import compressed_layers, replace_module
from vla_pruned_ros.compression.runtime import (
    check_mode,
    semi_structured_reason,
    to_packed,
    to_semi_structured,
)
from vla_pruned_ros.compression.safetensors_io import TensorFiles
from vla_pruned_ros.compression.sparse_runtime import (
    SparseGluestickLinear,
    from_loaded,
    sparse_reason,
)

FORMAT = "vla_pruned_ros.artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PRUNED, FACTORS, WEIGHTS, SPECTRA = (
    "pruned.safetensors",
    "factors.safetensors",
    "weights.safetensors",
    "spectra.safetensors",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FILE_MODE, FOLDER_MODE = 0o644, 0o755  # readable by the user a node runs as, writable by owner


class ArtifactError(ValueError):
    """An artifact that cannot be trusted or does not fit the model; the message names the file."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _save(tensors: dict[str, torch.Tensor], path: Path, kind: str) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        str(path),
        metadata={"format": f"{FORMAT}/{FORMAT_VERSION}", "kind": kind},
    )


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
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    target = DTYPES[weight_dtype] if weight_dtype else None

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(target) if target is not None and t.is_floating_point() else t

    pruned, factors, spectra, entries = {}, {}, {}, {}
    kept = total = 0
    for name, layer in layers.items():
        weight = cast(layer.dense_weight().detach())
        if not layer.pattern:
            raise ArtifactError(f"layer {name} does not record its sparsity pattern")
        for key, t in pack(weight, layer.pattern).items():
            pruned[f"{name}.{key}"] = t
        if layer.bias is not None:
            pruned[f"{name}.bias"] = cast(layer.bias)
        nnz = int(weight.count_nonzero())
        kept, total = kept + nnz, total + weight.numel()
        entry = {
            "shape": list(weight.shape),
            "pattern": layer.pattern,
            "storage": storage_kind(layer.pattern),
            "dtype": _dtype_name(weight.dtype),
            "bias": layer.bias is not None,
            "nonzero": nnz,
            "rank": layer.rank,
            "factor_dtype": layer.factor_dtype,
            "method": layer.method,
        }
        if isinstance(layer, GluestickConv2d):
            entry["conv"] = {"stride": list(layer.stride), "dilation": list(layer.dilation),
                             "padding": layer.padding if isinstance(layer.padding, str)
                             else list(layer.padding)}  # fmt: skip
        if layer.rank:
            for key in ("a", "b"):
                t = getattr(layer, key)
                factors[f"{name}.{key}"] = t if layer.factor_dtype == "int8" else cast(t)
                factors[f"{name}.{key}_scale"] = getattr(layer, f"{key}_scale")
        if layer.spectrum:
            entry["spectrum"] = layer.spectrum
        if layer.singular_values is not None:
            spectra[name] = layer.singular_values.float()
        entries[name] = entry
    in_layers = {
        f"{n}.{k}"
        for n in layers
        for k in ("weight", "bias", "a", "b", "a_scale", "b_scale", "values", "indices", "bitmask")
    }
    skip = set(skip_keys)
    rest = {
        k: cast(v) for k, v in model.state_dict().items() if k not in in_layers and k not in skip
    }
    manifest = new_manifest(
        entries, kept, total, weight_dtype, sorted(skip),
        getattr(model, "rank_policy", "rank:0"),
        {"correction": getattr(model, "correction", {"correction": "svd"}), **manifest_fields},
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _save(pruned, tmp / PRUNED, "pruned")
        _save(factors, tmp / FACTORS, "factors")
        _save(rest, tmp / WEIGHTS, "weights")
        if spectra:
            _save(spectra, tmp / SPECTRA, "spectra")
        finalize(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
    if manifest.get("manifest_sha256") != hashlib.sha256(_canonical(manifest)).hexdigest():
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
        unlisted = sorted(set(_listing(folder)) - set(manifest["files"]) - {MANIFEST})
        if unlisted:
            raise ArtifactError(
                f"{folder} holds files its {MANIFEST} does not list, refused (no checksum covers "
                f"them): {unlisted[:5]}{'...' if len(unlisted) > 5 else ''}; remove them or "
                "rebuild the artifact"
            )
    return manifest


def _listing(folder: Path) -> list[str]:
    """Every file under `folder`, as the manifest names it (a relative POSIX path)."""
    return sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*") if not f.is_dir())


def _tensors(folder: Path, name: str, manifest: dict[str, Any]) -> TensorFiles:
    """The tensors of one kind: `name` itself, or its shards (`pruned-00001.safetensors`, ...)
    as the streaming writer makes them, each read when needed (a 7B artifact never has a whole
    file's tensors, or its memory-mapped pages, next to the model being filled). Only files the
    manifest lists (and so checksums) are read; a key in two of them is refused."""
    stem = name.removesuffix(".safetensors")
    shard = re.compile(rf"{re.escape(stem)}-\d{{5}}\.safetensors")
    files = [folder / f for f in sorted(manifest["files"]) if f == name or shard.fullmatch(f)]
    try:
        return TensorFiles(files)
    except (OSError, ValueError, KeyError, struct.error) as err:
        raise ArtifactError(f"{folder / name} cannot be read as safetensors: {err}") from None


def finalize(tmp: Path, out: Path, manifest: dict[str, Any]) -> Path:
    """Checksum every file in `tmp` (sub-folders included), write the signed manifest, make it
    all readable by other users (files 0644, folders 0755: a node may run as another user than
    the one who compressed), and move `tmp` to `out`."""
    manifest["files"] = {name: sha256_file(tmp / name) for name in _listing(tmp)}
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for f in [tmp, *tmp.rglob("*")]:
        os.chmod(f, FOLDER_MODE if f.is_dir() else FILE_MODE)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


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
        for d in [dest, *dest.relative_to(folder).parents]:
            os.chmod(folder / d, FOLDER_MODE if (folder / d).is_dir() else FILE_MODE)
        manifest["files"][rel.as_posix()] = sha256_file(dest)
    manifest["source"] = {**manifest.get("source", {}), **(source or {})}
    manifest["extra"] = {**manifest.get("extra", {}), **(extra or {})}
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, FILE_MODE)
    tmp.replace(folder / MANIFEST)
    return folder


def _take(tensors: dict, key: str, file: Path) -> torch.Tensor:
    if key not in tensors:
        raise ArtifactError(f"{file} has no tensor {key!r}")
    return tensors[key]


_ENTRY_FIELDS = {"shape": list, "pattern": str, "storage": str, "bias": bool, "rank": int,
                 "factor_dtype": str}  # fmt: skip


def _check_layer_entry(file: Path, name: str, entry: Any) -> None:
    """A manifest layer entry has the fields the loader reads, with their types."""
    if not isinstance(entry, dict):
        raise ArtifactError(f"{file}: layer {name!r} has no entry object")
    for key, kind in _ENTRY_FIELDS.items():
        if not isinstance(entry.get(key), kind):
            raise ArtifactError(f"{file}: layer {name!r} has no valid {key!r} field")
    if entry["storage"] != storage_kind(entry["pattern"]):
        raise ArtifactError(f"{file}: layer {name!r} storage {entry['storage']!r} does not fit "
                            f"its pattern {entry['pattern']!r}")  # fmt: skip


def _check_packed(file: Path, name: str, packed: dict, pattern: str, shape: tuple) -> None:
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
    if p.kind == "nm" and count:
        idx = unpack_bits(bits, width, count).reshape(-1, p.n)
        if bool((idx >= p.m).any()) or bool((idx[:, 1:] <= idx[:, :-1]).any()):
            raise ArtifactError(
                f"{file}: tensor {name}.indices does not name {p.n} distinct positions in order "
                f"in every group of {p.m}"
            )


def load_artifact(
    path: str | os.PathLike,
    model_factory: Callable[..., nn.Module],
    mode: str = "materialize",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    finish: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Rebuild a compressed model: `model_factory()` (or `model_factory(manifest)`) makes the
    dense architecture (on the meta device to spare a dense copy), the artifact's tensors replace
    its weights, `finish` fills what no file stores (buffers rebuilt from a config), and the
    pruned layers take the runtime `mode`. The model comes back in eval mode with `.artifact`
    describing what was loaded (mode per layer, fallbacks, manifest)."""
    check_mode(mode)
    unmap_large_allocations()
    folder = Path(path)
    manifest = read_manifest(folder, verify=True)
    takes_manifest = len(inspect.signature(model_factory).parameters) >= 1
    model = model_factory(manifest) if takes_manifest else model_factory()
    device = torch.device(device)
    pruned = _tensors(folder, PRUNED, manifest)
    factors = _tensors(folder, FACTORS, manifest)
    spectra = _tensors(folder, SPECTRA, manifest)
    on_meta = any(t.is_meta for t in model.state_dict().values())
    compute = dtype or next(
        (p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32
    )
    layer_keys = set()
    for name, entry in manifest["layers"].items():
        _check_layer_entry(folder / MANIFEST, name, entry)
        try:
            skeleton = model.get_submodule(name)
        except AttributeError:
            raise ArtifactError(
                f"{folder / MANIFEST}: layer {name!r} is not in the model that model_factory "
                "built (wrong architecture or config?)"
            ) from None
        if not isinstance(skeleton, (nn.Linear, nn.Conv2d)):
            raise ArtifactError(
                f"{folder / MANIFEST}: layer {name!r} is a {type(skeleton).__name__} in the model "
                "that model_factory built, not a Linear or Conv2d"
            )
        shape = tuple(skeleton.weight.shape)
        is_conv = "conv" in entry
        if is_conv != isinstance(skeleton, nn.Conv2d):
            raise ArtifactError(
                f"{folder / MANIFEST}: layer {name} is a {'Conv2d' if is_conv else 'Linear'} in "
                f"the artifact but a {type(skeleton).__name__} in the model model_factory built"
            )
        if shape != tuple(entry["shape"]):
            raise ArtifactError(
                f"{folder / PRUNED}: layer {name} is {tuple(entry['shape'])} in the artifact but "
                f"{shape} in the model that model_factory built"
            )
        keys = ("values", "indices") if entry["storage"] == "nm" else ("values", "bitmask")
        packed = {k: _take(pruned, f"{name}.{k}", folder / PRUNED) for k in keys}
        _check_packed(folder / PRUNED, name, packed, entry["pattern"], shape)
        sparse_here = mode == "sparse" and not is_conv and device.type == "cpu"
        try:  # the sparse runtime never unpacks: its layer is built from `packed` below
            weight = (torch.empty(shape, device="meta") if sparse_here
                      else unpack(packed, entry["pattern"], shape))  # fmt: skip
        except (ValueError, RuntimeError, IndexError) as err:
            raise ArtifactError(f"{folder / PRUNED}: layer {name}: {err}") from None
        if is_conv:
            conv = entry["conv"]
            padding = conv["padding"] if isinstance(conv["padding"], str) else tuple(
                conv["padding"])  # fmt: skip
            shell = nn.Conv2d(shape[1], shape[0], shape[2:], stride=tuple(conv["stride"]),
                              padding=padding, dilation=tuple(conv["dilation"]),
                              bias=entry["bias"], device="meta")  # fmt: skip
        else:
            shell = nn.Linear(shape[1], shape[0], bias=entry["bias"], device="meta")
        shell.weight = nn.Parameter(weight.to(compute), requires_grad=False)
        if entry["bias"]:
            bias = _take(pruned, f"{name}.bias", folder / PRUNED)
            if tuple(bias.shape) != (shape[0],) or not bias.is_floating_point():
                raise ArtifactError(
                    f"{folder / PRUNED}: tensor {name}.bias is {bias.dtype} {tuple(bias.shape)}, "
                    f"expected a float ({shape[0]},)"
                )
            shell.bias = nn.Parameter(bias.to(compute), requires_grad=False)
        cls = GluestickConv2d if is_conv else GluestickLinear
        layer = cls(shell, None, entry["factor_dtype"], entry["pattern"], entry["method"])
        if entry["rank"]:
            for key in ("a", "b", "a_scale", "b_scale"):
                t = _take(factors, f"{name}.{key}", folder / FACTORS)
                if key.endswith("_scale") and t.numel() != 1:
                    raise ArtifactError(
                        f"{folder / FACTORS}: tensor {name}.{key} has shape {tuple(t.shape)}, "
                        "expected one value"
                    )
                if key in ("a", "b") and entry["factor_dtype"] != "int8":
                    t = t.to(compute)
                setattr(layer, key, t)
            if layer.a.shape != (shape[0], entry["rank"]) or layer.b.shape != (
                entry["rank"], layer.in_features
            ):  # fmt: skip
                raise ArtifactError(
                    f"{folder / FACTORS}: layer {name} factors do not have rank "
                    f"{entry['rank']} for shape {shape}"
                )
        layer.spectrum = entry.get("spectrum")
        layer.singular_values = spectra.get(name)
        if sparse_here:
            layer = from_loaded(layer, packed)
        replace_module(model, name, layer)
        layer_keys.update(f"{name}.{k}" for k in ("weight", "bias", "a", "b", "a_scale", "b_scale"))
        layer_keys.update(f"{name}.{k}" for k in layer.state_dict())  # the sparse layout's too
    rest = _tensors(folder, WEIGHTS, manifest)
    state = model.state_dict(keep_vars=True)
    state_keys = set(state)
    unexpected = sorted(rest.keys() - state_keys)
    aliases: dict[int, set[str]] = {}  # tied weights (e.g. lm_head = embeddings) are stored once
    for k, v in state.items():
        aliases.setdefault(id(v), set()).add(k)
    missing = sorted(
        k
        for k in state_keys - rest.keys() - layer_keys - set(manifest["provided_by_factory"])
        if not (aliases[id(state[k])] & rest.keys())
    )
    if unexpected or missing:
        raise ArtifactError(
            f"{folder / WEIGHTS} does not fit the model that model_factory built: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key in sorted(rest.keys()):  # one tensor at a time; a meta skeleton takes them as is
        v = rest[key]
        v = v.to(compute) if v.is_floating_point() else v
        try:
            model.load_state_dict({key: v}, strict=False, assign=on_meta)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise ArtifactError(f"{folder / WEIGHTS}: tensor {key!r}: {detail}") from None
    if on_meta:
        _retie(model, aliases, rest.keys())
    if finish is not None:
        finish(model)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ArtifactError(f"{folder}: {len(left)} tensors were never loaded, e.g. {left[:3]}")
    model = model.to(device=device, dtype=compute).eval()
    layer_modes, fallbacks = _apply_mode(model, mode, device, manifest)
    model.artifact = {
        "path": str(folder),
        "mode": mode,
        "layer_modes": layer_modes,
        "fallbacks": fallbacks,
        "manifest": manifest,
    }
    return model


def _retie(model: nn.Module, aliases: dict[int, set[str]], stored: set[str]) -> None:
    """`assign` replaced only the stored name of a tied pair; point the other names (still on
    the meta device) at the same tensor again."""
    for names in aliases.values():
        have = sorted(names & stored)
        if not have or len(names) == 1:
            continue
        source = model.get_parameter(have[0]) if _is_param(model, have[0]) else None
        for other in names - stored:
            module_name, _, leaf = other.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            if source is not None and leaf in module._parameters:
                module._parameters[leaf] = source


def _is_param(model: nn.Module, key: str) -> bool:
    module_name, _, leaf = key.rpartition(".")
    return leaf in (model.get_submodule(module_name) if module_name else model)._parameters


def _apply_mode(
    model: nn.Module, mode: str, device: torch.device, manifest: dict
) -> tuple[dict[str, str], dict[str, str]]:
    layer_modes: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    storage = DTYPES.get(manifest.get("weight_dtype") or "")
    for name, layer in compressed_layers(model).items():
        if mode == "packed":
            replace_module(model, name, to_packed(layer, storage))
            layer_modes[name] = "packed"
        elif mode == "sparse":
            reason = None if isinstance(layer, SparseGluestickLinear) else sparse_reason(
                layer, device) or "not loaded into the sparse layout"  # fmt: skip
            layer_modes[name] = "materialize" if reason else "sparse"
            if reason:
                fallbacks[name] = reason
        elif mode == "semi_structured":
            reason = semi_structured_reason(layer, device)
            if reason is None:
                to_semi_structured(layer)
                layer_modes[name] = "semi_structured"
            else:
                fallbacks[name] = reason
                layer_modes[name] = "materialize"
        else:
            layer_modes[name] = "materialize"
    if fallbacks:
        first = next(iter(fallbacks.values()))
        warnings.warn(
            f"{mode}: {len(fallbacks)} of {len(layer_modes)} layers stay materialized "
            f"(e.g. {first}); see model.artifact['fallbacks']",
            stacklevel=3,
        )
    return layer_modes, fallbacks
