"""Loading an artifact into a model: checksums first (`artifact_verify`), then the pruned layers
built in their runtime mode (`runtime_modes`) one at a time, then the rest of the state dict
one tensor at a time into a skeleton that may sit on the meta device. A skeleton may leave out
whole submodules (`leave_out`): their tensors are not read, and what they would run as and hold
is recorded from the manifest and the tensor headers."""

from __future__ import annotations

import inspect
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.artifact_layout import (
    FACTORS,
    MANIFEST,
    PRUNED,
    SPECTRA,
    WEIGHTS,
    ArtifactError,
    kind_files,
)
from vla_pruned_ros.compression.artifact_verify import (
    check_layer_entry,
    check_packed,
    read_manifest,
)
from vla_pruned_ros.compression.gluestick import GluestickConv2d, GluestickLinear
from vla_pruned_ros.compression.packing import unpack
from vla_pruned_ros.compression.prune import replace_module
from vla_pruned_ros.compression.quantize import quantize
from vla_pruned_ros.compression.runtime_modes import (
    AUTO,
    apply_mode,
    check_mode,
    layer_mode,
    meta_layer,
    pruned_layer_bytes,
    sparse_path_note,
    stored_tensor_bytes,
    wants_sparse,
)
from vla_pruned_ros.compression.safetensors_io import TensorFiles
from vla_pruned_ros.compression.sparse_runtime import SparseGluestickLinear, from_loaded


def _tensors(folder: Path, name: str, manifest: dict[str, Any]) -> TensorFiles:
    """The tensors of one kind (its file or its shards), each read when needed (a 7B artifact
    never has a whole file's tensors, or its memory-mapped pages, next to the model being
    filled). Only files the manifest lists (and so checksums) are read; a key in two of them
    is refused."""
    try:
        return TensorFiles(kind_files(folder, name, manifest))
    except (OSError, ValueError, KeyError, struct.error) as err:
        raise ArtifactError(f"{folder / name} cannot be read as safetensors: {err}") from None


def _take(tensors: TensorFiles, key: str, file: Path) -> torch.Tensor:
    if key not in tensors:
        raise ArtifactError(f"{file} has no tensor {key!r}")
    return tensors[key]


def load_artifact(
    path: str | os.PathLike,
    model_factory: Callable[..., nn.Module],
    mode: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    finish: Callable[[nn.Module], None] | None = None,
    leave_out: tuple[str, ...] = (),
) -> nn.Module:
    """Rebuild a compressed model: `model_factory()` (or `model_factory(manifest)`) makes the
    dense architecture (on the meta device to spare a dense copy), the artifact's tensors replace
    its weights, `finish` fills what no file stores (buffers rebuilt from a config), and the
    pruned layers take the runtime `mode`: by default (`None` or 'auto') `sparse` on CPU for
    every layer the kernel serves, read straight into its packed layout so no dense copy
    exists, and `materialize` for the others and on CUDA (see `runtime_modes`). The model
    comes back in eval mode with `.artifact` describing what was loaded (requested mode, mode
    per layer, fallbacks, manifest).

    `leave_out`: submodule names (e.g. `("text",)`) the factory's skeleton does not build. Their
    pruned layers and weights are not read (every file is still checksummed);
    `.artifact["left_out"]` records the mode each of their pruned layers would take here and
    why (the same choice a whole load makes, from the manifest entry), and the bytes their
    stored tensors would hold (`runtime_modes.pruned_layer_bytes`; what the factory itself
    would build there, such as `provided_by_factory` tensors, is the caller's to add). Only
    for `auto`, `sparse` and `materialize`, whose choice needs no tensor."""
    requested = check_mode(mode)
    if leave_out and requested not in (AUTO, "sparse", "materialize"):
        raise ValueError(f"leave_out works with modes auto, sparse and materialize, not {mode!r}")
    prefixes = tuple(f"{m}." for m in leave_out)
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
    chosen: dict[str, tuple[str, str | None]] = {}
    layer_keys = set()
    outside: dict[str, tuple[str, str | None]] = {}
    for name, entry in manifest["layers"].items():
        check_layer_entry(folder / MANIFEST, name, entry)
        chosen[name] = (
            layer_mode(meta_layer(entry), device) if wants_sparse(requested) else (requested, None)
        )
        if name.startswith(prefixes):
            outside[name] = chosen.pop(name)
            continue
        # a sparse layer keeps float factors as stored (never widened to the compute dtype)
        keep = chosen[name][0] == "sparse"
        layer, packed = _pruned_layer(folder, model, name, entry, pruned, factors, compute, keep)
        layer.spectrum = entry.get("spectrum")
        layer.singular_values = spectra.get(name)
        if chosen[name][0] == "sparse":  # built from the packed tensors, never unpacked
            layer = from_loaded(layer, packed)
        else:
            try:
                weight = unpack(packed, entry["pattern"], tuple(entry["shape"]))
            except (ValueError, RuntimeError, IndexError) as err:
                raise ArtifactError(f"{folder / PRUNED}: layer {name}: {err}") from None
            layer.weight = nn.Parameter(weight.to(compute), requires_grad=False)
        replace_module(model, name, layer)
        layer_keys.update(f"{name}.{k}" for k in ("weight", "bias", "a", "b", "a_scale", "b_scale"))
        layer_keys.update(f"{name}.{k}" for k in layer.state_dict())  # the sparse layout's too
    _load_rest(folder, model, manifest, layer_keys, compute, on_meta, prefixes)
    if finish is not None:
        finish(model)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ArtifactError(f"{folder}: {len(left)} tensors were never loaded, e.g. {left[:3]}")
    model = model.to(device=device, dtype=compute).eval()
    layer_modes, fallbacks = apply_mode(model, requested, device, manifest, chosen)
    model.artifact = {
        "path": str(folder),
        "mode": requested,
        "layer_modes": layer_modes,
        "fallbacks": fallbacks,
        "manifest": manifest,
    }
    if "sparse" in layer_modes.values():
        values = frozenset(m.weight_dtype for m in model.modules()
                           if isinstance(m, SparseGluestickLinear))  # fmt: skip
        model.artifact["sparse_path"] = sparse_path_note(compute, values)
    if leave_out:
        model.artifact["left_out"] = _left_out(folder, manifest, outside, pruned, factors, compute,
                                               prefixes, leave_out)  # fmt: skip
    return model


def _left_out(folder: Path, manifest: dict[str, Any], left: dict[str, tuple[str, str | None]],
              pruned: TensorFiles, factors: TensorFiles, compute: torch.dtype,
              prefixes: tuple[str, ...], leave_out: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """What the left-out submodules' stored tensors would run as and hold (see load_artifact):
    modes and fallback reasons as `apply_mode` records them, and bytes at `compute`."""
    from vla_pruned_ros.compression.kernels import kernel_unavailable_reason

    width = torch.empty((), dtype=compute).element_size()
    sparse = any(m == "sparse" for m, _ in left.values())
    # the compiled kernel keeps per-row offsets of an unstructured layer; its fallback does not
    offsets = not sparse or kernel_unavailable_reason() is None

    def header(key: str) -> dict | None:
        for files in (pruned, factors):
            if key in files:
                return files.info(key)
        return None

    held = sum(pruned_layer_bytes(name, manifest["layers"][name], mode, header, width, offsets)
               for name, (mode, _) in left.items())  # fmt: skip
    rest = _tensors(folder, WEIGHTS, manifest)
    held += sum(stored_tensor_bytes(rest.info(k), width) for k in rest.keys()
                if k.startswith(prefixes))  # fmt: skip
    return {
        "modules": list(leave_out),
        "layer_modes": {name: mode for name, (mode, _) in left.items()},
        "fallbacks": {name: why for name, (_, why) in left.items() if why},
        "bytes": held,
        "provided_by_factory": [
            k for k in manifest["provided_by_factory"] if k.startswith(prefixes)
        ],
        **({"sparse_path": sparse_path_note()} if sparse else {}),
    }


def _pruned_layer(
    folder: Path,
    model: nn.Module,
    name: str,
    entry: Any,
    pruned: TensorFiles,
    factors: TensorFiles,
    compute: torch.dtype,
    keep_factors: bool = False,
) -> tuple[GluestickLinear, dict[str, torch.Tensor]]:
    """One pruned layer of the artifact, checked against the model's skeleton, with its bias
    and factors (at `compute`, or as stored with `keep_factors`) but its weight still on the
    meta device; and its packed tensors (checked)."""
    manifest_file = folder / MANIFEST  # the entry itself is checked by the caller
    try:
        skeleton = model.get_submodule(name)
    except AttributeError:
        raise ArtifactError(
            f"{manifest_file}: layer {name!r} is not in the model that model_factory built "
            "(wrong architecture or config?)"
        ) from None
    if not isinstance(skeleton, (nn.Linear, nn.Conv2d)):
        raise ArtifactError(
            f"{manifest_file}: layer {name!r} is a {type(skeleton).__name__} in the model "
            "that model_factory built, not a Linear or Conv2d"
        )
    shape = tuple(skeleton.weight.shape)
    is_conv = "conv" in entry
    if is_conv != isinstance(skeleton, nn.Conv2d):
        raise ArtifactError(
            f"{manifest_file}: layer {name} is a {'Conv2d' if is_conv else 'Linear'} in "
            f"the artifact but a {type(skeleton).__name__} in the model model_factory built"
        )
    if shape != tuple(entry["shape"]):
        raise ArtifactError(
            f"{folder / PRUNED}: layer {name} is {tuple(entry['shape'])} in the artifact but "
            f"{shape} in the model that model_factory built"
        )
    keys = ("values", "indices") if entry["storage"] == "nm" else ("values", "bitmask")
    packed = {k: _take(pruned, f"{name}.{k}", folder / PRUNED) for k in keys}
    check_packed(folder / PRUNED, name, packed, entry["pattern"], shape)
    if is_conv:
        conv = entry["conv"]
        padding = conv["padding"] if isinstance(conv["padding"], str) else tuple(
            conv["padding"])  # fmt: skip
        shell = nn.Conv2d(shape[1], shape[0], shape[2:], stride=tuple(conv["stride"]),
                          padding=padding, dilation=tuple(conv["dilation"]),
                          bias=entry["bias"], device="meta")  # fmt: skip
    else:
        shell = nn.Linear(shape[1], shape[0], bias=entry["bias"], device="meta")
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
            if key in ("a", "b") and entry["factor_dtype"] != "int8" and not keep_factors:
                t = t.to(compute)
            setattr(layer, key, t)
        if layer.a.shape != (shape[0], entry["rank"]) or layer.b.shape != (
            entry["rank"], layer.in_features
        ):  # fmt: skip
            raise ArtifactError(
                f"{folder / FACTORS}: layer {name} factors do not have rank "
                f"{entry['rank']} for shape {shape}"
            )
    else:  # the empty factors the constructor made from the meta weight, made real
        for key in ("a", "b"):
            setattr(layer, key, quantize(torch.zeros(0, 0, dtype=compute), layer.factor_dtype)[0])
    return layer, packed


def _load_rest(
    folder: Path,
    model: nn.Module,
    manifest: dict[str, Any],
    layer_keys: set[str],
    compute: torch.dtype,
    on_meta: bool,
    prefixes: tuple[str, ...] = (),
) -> None:
    """Every tensor of the weights files into the model, one at a time (a meta skeleton takes
    them as they are), after checking the files and the model name the same tensors; those
    under `prefixes` (submodules the skeleton leaves out) are not read."""
    rest = _tensors(folder, WEIGHTS, manifest)
    stored = {k for k in rest.keys() if not k.startswith(prefixes)}
    state = model.state_dict(keep_vars=True)
    state_keys = set(state)
    unexpected = sorted(stored - state_keys)
    aliases: dict[int, set[str]] = {}  # tied weights (e.g. lm_head = embeddings) are stored once
    for k, v in state.items():
        aliases.setdefault(id(v), set()).add(k)
    missing = sorted(
        k
        for k in state_keys - stored - layer_keys - set(manifest["provided_by_factory"])
        if not (aliases[id(state[k])] & stored)
    )
    if unexpected or missing:
        raise ArtifactError(
            f"{folder / WEIGHTS} does not fit the model that model_factory built: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key in sorted(stored):
        v = rest[key]
        v = v.to(compute) if v.is_floating_point() else v
        try:
            model.load_state_dict({key: v}, strict=False, assign=on_meta)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise ArtifactError(f"{folder / WEIGHTS}: tensor {key!r}: {detail}") from None
    if on_meta:
        _retie(model, aliases, stored)


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
