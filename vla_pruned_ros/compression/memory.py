"""What a (compressed) model costs in bytes: what it would be dense, what it is stored packed,
and what it actually holds in memory in its current runtime mode."""

from __future__ import annotations

import torch
from torch import nn

from vla_pruned_ros.compression.gluestick import GluestickLinear
from vla_pruned_ros.compression.packing import packed_nbytes


def tensor_nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor really holds, also for PyTorch's semi-structured sparse tensors."""
    inner = [getattr(t, k, None) for k in ("packed", "meta", "packed_t", "meta_t")]
    inner = [x for x in inner if isinstance(x, torch.Tensor)]
    if inner:
        return sum(x.numel() * x.element_size() for x in inner)
    return t.numel() * t.element_size()


def _distinct_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of `model`, a tensor shared by two modules once."""
    seen: set[int] = set()
    out = []
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def resident_bytes(model: nn.Module) -> int:
    """Bytes of every distinct parameter and buffer the model holds."""
    return sum(tensor_nbytes(t) for t in _distinct_tensors(model))


def _float_bytes(tensors: list[torch.Tensor]) -> list[tuple[str, int]]:
    """(dtype name, bytes) of the floating-point tensors, most bytes first."""
    by_dtype: dict[str, int] = {}
    for t in tensors:
        if t.dtype.is_floating_point:
            name = str(t.dtype).removeprefix("torch.")
            by_dtype[name] = by_dtype.get(name, 0) + tensor_nbytes(t)
    return sorted(by_dtype.items(), key=lambda kv: (-kv[1], kv[0]))


def float_dtypes(model: nn.Module) -> str:
    """The floating-point dtypes the model holds, by bytes, largest first: 'bfloat16', or
    'bfloat16 74%, float32 26%' when mixed (float32 GLUESTICK factors beside bf16 weights),
    'none' without floats. Integer tensors (sparse indices, token ids) are left out."""
    found = _float_bytes(_distinct_tensors(model))
    total = sum(n for _, n in found)
    if not total:
        return "none"
    if len(found) == 1:
        return found[0][0]
    return ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in found)


def compute_dtype(model: nn.Module) -> str:
    """The dtype the model computes in: that of most of its floating-point parameters (the
    dense layers, norms and embeddings a loader casts; activations follow them into the sparse
    layers, whose packed values and factors keep their stored dtypes), else of its buffers;
    'none' without floats. What an operator checks to see that a model meant to run in bf16
    does: a dtype option lost on the way leaves it in float32 and silently correct."""
    seen = _distinct_tensors(model)
    params = {id(p) for p in model.parameters()}
    found = _float_bytes([t for t in seen if id(t) in params]) or _float_bytes(seen)
    return found[0][0] if found else "none"


_FACTOR_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


def memory_report(model: nn.Module, value_bytes: int | None = None) -> dict[str, float | int]:
    """Byte counts: dense fp32/fp16 equivalents, packed pruned weights, GLUESTICK factors, the
    rest of the model, their total and its ratio to dense, and the bytes resident now.

    `value_bytes` counts floating-point weights (not the factors, whose dtype is their own) as
    if stored at that width (2 for the fp16 of an artifact); by default, at their width in memory.
    """
    params = 0
    packed = factors = bias = 0
    compressed = 0
    in_layers: set[int] = set()
    for layer in model.modules():
        if not isinstance(layer, GluestickLinear):
            continue
        compressed += 1
        shape = tuple(getattr(layer, "weight_shape", None) or layer.weight.shape)
        numel = shape[0] * (int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1)
        params += numel
        width = value_bytes or _value_width(layer)
        if hasattr(layer, "values"):  # packed mode
            nnz = int(layer.values.numel())
        elif hasattr(layer.weight, "packed"):  # semi-structured 2:4
            nnz = numel // 2
        else:
            nnz = int(layer.weight.count_nonzero())
        packed += packed_nbytes(shape, layer.pattern or "unstructured:0", nnz, width)
        for key in ("a", "b", "a_scale", "b_scale"):
            t = getattr(layer, key)
            # A and B at their stored dtype: a loader may widen fp16 factors for fp32 compute
            size = _FACTOR_BYTES.get(layer.factor_dtype, 0) if key in ("a", "b") else 0
            factors += t.numel() * (size or t.element_size()) if layer.rank else 0
            in_layers.add(id(t))
        for t in layer.parameters(recurse=False):
            in_layers.add(id(t))
        for t in layer.buffers(recurse=False):
            in_layers.add(id(t))
        if layer.bias is not None:
            params += layer.bias.numel()
            bias += layer.bias.numel() * (value_bytes or layer.bias.element_size())
    other = 0
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in in_layers or id(t) in seen:
            continue
        seen.add(id(t))
        params += t.numel()
        width = value_bytes if value_bytes and t.is_floating_point() else t.element_size()
        other += t.numel() * width
    total = packed + factors + bias + other
    dense16, dense32 = 2 * params, 4 * params
    return {
        "params_dense": params,
        "compressed_layers": compressed,
        "dense_fp32_bytes": dense32,
        "dense_fp16_bytes": dense16,
        "pruned_packed_bytes": packed,
        "factor_bytes": factors,
        "other_bytes": other + bias,
        "total_bytes": total,
        "ratio_to_dense_fp16": round(total / dense16, 4) if params else 0.0,
        "ratio_to_dense_fp32": round(total / dense32, 4) if params else 0.0,
        "resident_bytes": resident_bytes(model),
    }


def _value_width(layer: GluestickLinear) -> int:
    if hasattr(layer, "values"):
        return layer.values.element_size()
    return torch.empty((), dtype=layer.weight.dtype).element_size()


def unmap_large_allocations(threshold: int = 1 << 20) -> bool:
    """Opt in, for the whole process, to glibc serving allocations above `threshold` bytes from
    their own memory maps, returned to the system when freed. An entry point that loads or
    compresses a large model calls it once at start (`vla-prune`; the policy node and
    benchmarks that measure load peaks should too); no library function calls it, because it
    changes the allocator of every thread of the caller's process, which is the caller's
    decision.

    Why: glibc raises its mmap threshold after large frees and then serves big tensors from its
    heap, which it seldom gives back, so filling a model tensor by tensor leaves the freed read
    buffers resident (measured on a 1.1B artifact: 3.1x the fp16 size at peak instead of about
    1.2x). The cost is a system call per large allocation. Returns False where the C library
    is not glibc (nothing changed)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_mmap_threshold = -3
    return bool(libc.mallopt(m_mmap_threshold, threshold))
