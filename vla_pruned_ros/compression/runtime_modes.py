"""Which runtime mode each pruned layer of a loaded artifact takes, and what that holds.

The modes themselves (`runtime.py`, `sparse_runtime.py`):
- `sparse`: the compiled CPU kernel computes from the packed form; no dense copy of a layer
  exists at load or forward (without a C++ compiler, the same layer runs the pure-PyTorch
  packed path and says so);
- `materialize`: the dense pruned weight rebuilt once (for comparison, for CUDA, and for layers
  the kernel cannot take: convolutions);
- `packed`: values and indices kept, expanded for each forward (pure PyTorch);
- `semi_structured`: PyTorch's 2:4 kernels on CUDA.

`auto` (what a caller gets by not choosing, `mode=None`) is `sparse` on CPU for every layer the
kernel serves and `materialize` for the others and on CUDA, decided per layer by `layer_mode`
and recorded in `model.artifact["layer_modes"]`. Choosing a mode explicitly warns when layers
fall back; `auto` records its choices without a warning (they are its policy, not surprises).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from vla_pruned_ros.compression.artifact_layout import (
    DTYPES,
    FACTORS,
    PRUNED,
    WEIGHTS,
    dtype_name,
    kind_files,
)
from vla_pruned_ros.compression.gluestick import GluestickConv2d, GluestickLinear
from vla_pruned_ros.compression.kernels import kernel, kernel_unavailable_reason
from vla_pruned_ros.compression.memory import compute_dtype, float_dtypes, resident_bytes
from vla_pruned_ros.compression.prune import compressed_layers, replace_module
from vla_pruned_ros.compression.runtime import semi_structured_reason, to_packed, to_semi_structured
from vla_pruned_ros.compression.safetensors_io import safetensors_keys
from vla_pruned_ros.compression.sparse_runtime import SparseGluestickLinear, sparse_reason

MODES = ("materialize", "packed", "semi_structured", "sparse")  # what a layer can run as
AUTO = "auto"
CHOICES = (AUTO, *MODES)  # what a caller (or the policy node's runtime_mode) may ask for


def check_mode(mode: str | None) -> str:
    """The requested mode, `None` read as `auto`; a ValueError for an unknown one."""
    mode = AUTO if mode is None else mode
    if mode not in CHOICES:
        raise ValueError(f"unknown runtime mode {mode!r}; use one of {CHOICES}")
    return mode


def layer_mode(layer: nn.Module, device: torch.device) -> tuple[str, str | None]:
    """The mode one layer takes under `auto` or `sparse` on `device`, and why it did not get
    `sparse` (None when it did). The sparse runtime's own `sparse_reason` decides
    what the kernel serves, so this policy never disagrees with it."""
    reason = sparse_reason(layer, torch.device(device))
    return ("materialize", reason) if reason else ("sparse", None)


def wants_sparse(requested: str) -> bool:
    return requested in (AUTO, "sparse")


def apply_mode(
    model: nn.Module,
    requested: str,
    device: torch.device,
    manifest: dict[str, Any],
    chosen: dict[str, tuple[str, str | None]],
) -> tuple[dict[str, str], dict[str, str]]:
    """Put every pruned layer of a loaded `model` into its mode; ({layer: mode}, {layer: why it
    fell back to materialize}). `chosen` holds the per-layer choices already made at load for
    `sparse`/`auto` (a sparse layer is built straight from the packed tensors)."""
    layer_modes: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    storage = DTYPES.get(manifest.get("weight_dtype") or "")
    for name, layer in compressed_layers(model).items():
        if requested == "packed":
            replace_module(model, name, to_packed(layer, storage))
            layer_modes[name] = "packed"
        elif wants_sparse(requested):
            mode, reason = chosen.get(name, ("materialize", "not loaded from the artifact"))
            if mode == "sparse" and not isinstance(layer, SparseGluestickLinear):
                mode, reason = "materialize", "not loaded into the sparse layout"
            layer_modes[name] = mode
            if reason:
                fallbacks[name] = reason
        elif requested == "semi_structured":
            reason = semi_structured_reason(layer, device)
            if reason is None:
                to_semi_structured(layer)
                layer_modes[name] = "semi_structured"
            else:
                fallbacks[name] = reason
                layer_modes[name] = "materialize"
        else:
            layer_modes[name] = "materialize"
    if fallbacks and requested != AUTO:
        first = next(iter(fallbacks.values()))
        warnings.warn(
            f"{requested}: {len(fallbacks)} of {len(layer_modes)} layers stay materialized "
            f"(e.g. {first}); see model.artifact['fallbacks']",
            stacklevel=3,
        )
    return layer_modes, fallbacks


class RuntimeSummary(NamedTuple):
    """What a loaded model runs as, for /diagnostics and logs: `modes` in one line
    ('sparse 44/46, materialize 2/46 (convolutions are not supported ...)'; 'dense' for a
    model that is not an artifact), the layer count per mode, the bytes it holds, its
    floating-point dtypes by bytes and the dtype it computes in (`memory.float_dtypes`,
    `memory.compute_dtype`)."""

    modes: str
    layers: dict[str, int]
    resident_bytes: int
    dtypes: str
    compute_dtype: str


def runtime_summary(model: nn.Module) -> RuntimeSummary:
    """The runtime modes of a model `load_artifact` returned (mode per layer, summarised) and
    its resident bytes (every distinct parameter and buffer)."""
    info = getattr(model, "artifact", None) or {}
    layer_modes: dict[str, str] = info.get("layer_modes", {})
    text, counts = modes_text(layer_modes, info.get("fallbacks", {}), info.get("sparse_path"))
    return RuntimeSummary(text, counts, resident_bytes(model), float_dtypes(model),
                          compute_dtype(model))  # fmt: skip


def modes_text(
    layer_modes: dict[str, str], fallbacks: dict[str, str], sparse_path: str | None = None
) -> tuple[str, dict[str, int]]:
    """`RuntimeSummary.modes` and `.layers` of {layer: mode}, {layer: why it fell back} and the
    sparse path's note (`model.artifact`'s entries)."""
    counts: dict[str, int] = {}
    for mode in layer_modes.values():
        counts[mode] = counts.get(mode, 0) + 1
    if not counts:
        return "dense", counts
    total = len(layer_modes)
    reasons: dict[str, set[str]] = {}
    for name, why in fallbacks.items():
        reasons.setdefault(layer_modes.get(name, "materialize"), set()).add(why)
    parts = []
    for mode, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        why = "; ".join(sorted(reasons.get(mode, ())))
        parts.append(f"{mode} {n}/{total}" + (f" ({why})" if why else ""))
    text = ", ".join(parts)
    if counts.get("sparse") and sparse_path:
        text += f"; sparse layers: {sparse_path}"
    return text, counts


def sparse_path_note(compute: torch.dtype = torch.float32,
                     values: frozenset[torch.dtype] = frozenset()) -> str:  # fmt: skip
    """How `sparse` layers compute here: the compiled kernel (and whether a model computing
    in `compute` with layer `values` of those dtypes takes its AMX tile path for many tokens),
    or the pure-PyTorch path and why. What an operator reads to see that the bf16 recipe
    really reaches the tiles."""
    reason = kernel_unavailable_reason()
    if reason is not None:
        return f"pure-PyTorch path ({reason})"
    module = kernel()
    if compute != torch.bfloat16 or not module.use_tiles():
        return "compiled kernel"
    if values == {torch.bfloat16}:
        tile_tokens = module.set_tuning()[3]  # no arguments: the tuning as it is, unchanged
        return f"compiled kernel, AMX tiles from {tile_tokens} tokens (bf16 values and inputs)"
    stored = ", ".join(sorted(dtype_name(v) for v in values))
    return (
        f"compiled kernel; not on AMX tiles: bf16 inputs need bf16 values (this artifact "
        f"stores {stored}; prune with --weight-dtype bfloat16)"
    )


def meta_layer(entry: dict[str, Any]) -> GluestickLinear:
    """A weightless (meta-device) layer of a manifest entry's kind and shape: what the mode
    policy is asked about before any tensor is read."""
    shape = entry["shape"]
    if "conv" in entry:
        shell = nn.Conv2d(shape[1], shape[0], tuple(shape[2:]), bias=False, device="meta")
        return GluestickConv2d(shell, None, entry["factor_dtype"], entry["pattern"])
    shell = nn.Linear(shape[1], shape[0], bias=False, device="meta")
    return GluestickLinear(shell, None, entry["factor_dtype"], entry["pattern"])


def expected_resident(
    folder: Path,
    manifest: dict[str, Any],
    mode: str | None = None,
    device: str = "cpu",
    compute_dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """What loading an artifact in `mode` (default: `auto`) on `device` will hold in memory,
    from its manifest and tensor headers alone (no tensor is read): bytes of the pruned layers
    in their modes, of the rest of the model at `compute_dtype`, their total, and the layer
    count per mode. Tensors the model factory provides (`provided_by_factory`, buffers rebuilt
    from a config) are not in the artifact and not counted. Only `auto`, `sparse` and
    `materialize` are modelled. Sparse layers are counted as the compiled kernel holds them
    (never building it: `vla-inspect` must stay quick); its pure-PyTorch fallback holds
    (rows + 1) x 8 bytes less per unstructured layer."""
    requested = check_mode(mode)
    if requested not in (AUTO, "sparse", "materialize"):
        raise ValueError(f"expected_resident models auto, sparse and materialize, not {mode!r}")
    headers: dict[str, dict] = {}
    for name in (PRUNED, FACTORS, WEIGHTS):
        for f in kind_files(Path(folder), name, manifest):
            headers.update({k: {**v, "kind": name} for k, v in safetensors_keys(f).items()})
    width = torch.empty((), dtype=compute_dtype).element_size()
    layers = {"sparse": 0, "materialize": 0}
    counts: dict[str, int] = {}
    for name, entry in manifest["layers"].items():
        chosen = ("materialize", None)
        if wants_sparse(requested):
            chosen = layer_mode(meta_layer(entry), torch.device(device))
        kind = chosen[0]
        counts[kind] = counts.get(kind, 0) + 1
        layers[kind] += pruned_layer_bytes(name, entry, kind, headers.get, width)
    rest = sum(stored_tensor_bytes(info, width) for info in headers.values()
               if info["kind"] == WEIGHTS)  # fmt: skip
    return {
        "mode": requested,
        "device": device,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "layers": counts,
        "sparse_layer_bytes": layers["sparse"],
        "materialized_layer_bytes": layers["materialize"],
        "other_bytes": rest,
        "total_bytes": layers["sparse"] + layers["materialize"] + rest,
        "not_counted": list(manifest.get("provided_by_factory", [])),
    }


def pruned_layer_bytes(
    name: str,
    entry: dict[str, Any],
    kind: str,
    header: Callable[[str], dict | None],
    width: int,
    row_offsets: bool = True,
) -> int:
    """Bytes one pruned layer holds loaded as `kind` (`sparse` or `materialize`) at a compute
    dtype of `width` bytes, from its manifest entry and its tensors' safetensors headers
    (`header(key)`: the entry, or None). `row_offsets`: the compiled kernel's per-row offsets
    of an unstructured sparse layer are held (its pure-PyTorch fallback holds none)."""

    def stored(key: str) -> int:
        info = header(key)
        if info is None:
            return 0
        return math.prod(info["shape"]) * _dtype_bytes(info["dtype"])

    shape = entry["shape"]
    size = 2 * width  # a_scale, b_scale follow the model's dtype
    size += shape[0] * width if entry["bias"] else 0
    if entry["rank"]:
        for key in ("a", "b"):
            if kind == "sparse":  # kept as the file stores them (fp32 factors may be fp16 there)
                size += stored(f"{name}.{key}")
                continue
            numel = math.prod((header(f"{name}.{key}") or {}).get("shape", [0]))
            size += numel if entry["factor_dtype"] == "int8" else numel * width
    if kind == "sparse":
        keys = ("values", "indices") if entry["storage"] == "nm" else ("values", "bitmask")
        size += sum(stored(f"{name}.{k}") for k in keys)
        if entry["storage"] != "nm" and row_offsets:
            size += (shape[0] + 1) * 8  # the kernel's per-row offsets (int64)
    else:
        size += math.prod(shape) * width
    return size


def stored_tensor_bytes(info: dict, width: int) -> int:
    """Bytes a weights-file tensor (its safetensors header entry) holds once loaded: floats at
    the compute dtype's `width`, others as stored."""
    floating = info["dtype"] in ("F64", "F32", "F16", "BF16")
    return math.prod(info["shape"]) * (width if floating else _dtype_bytes(info["dtype"]))


_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
          "BOOL": 1}  # fmt: skip


def _dtype_bytes(name: str) -> int:
    return _BYTES.get(name, 4)


def describe_expected(expected: dict[str, Any], extra_bytes: int = 0) -> str:
    """One line for `vla-prune` and `vla-inspect`: what the default mode will hold in memory
    (an `expected_resident` result; `extra_bytes` for tensors the factory provides, when the
    caller knows them)."""
    layers = ", ".join(f"{mode} {n}" for mode, n in sorted(expected["layers"].items()))
    total = expected["total_bytes"] + extra_bytes
    line = (
        f"{expected['mode']} on {expected['device']} ({expected['compute_dtype']} compute): "
        f"{total / 1e6:.2f} MB resident (pruned layers {layers or 'none'}: "
        f"{(expected['sparse_layer_bytes'] + expected['materialized_layer_bytes']) / 1e6:.2f} MB;"
        f" rest {(expected['other_bytes'] + extra_bytes) / 1e6:.2f} MB)"
    )
    if expected["not_counted"] and not extra_bytes:
        line += f"; plus what the model factory provides ({', '.join(expected['not_counted'])})"
    return line
