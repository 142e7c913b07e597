"""The `sparse` runtime mode: pruned layers computed straight from their packed form on CPU.

A `SparseGluestickLinear` holds the artifact's tensors as they are stored (values fp16/bf16,
N:M index bytes or an unstructured bitmask plus per-row offsets, the GLUESTICK factors in their
storage dtype) and calls the compiled kernel (`kernels.py`) for y = W_p x + b + A (B x): no dense
copy of the layer exists, at load or at forward. Its storage keeps its dtype when the model is
cast (`model.to(dtype)` casts only the bias). Where the kernel cannot be built, the same layer
runs the pure-PyTorch packed path (one layer expanded per forward) and says so.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vla_pruned_ros.compression.gluestick import GluestickConv2d, GluestickLinear
from vla_pruned_ros.compression.kernels import kernel, kernel_unavailable_reason
from vla_pruned_ros.compression.packing import unpack
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.quantize import dequantize

_STORAGE = ("values", "indices", "bitmask", "row_offsets", "a", "b", "a_scale", "b_scale")
_VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def sparse_reason(layer: nn.Module, device: torch.device) -> str | None:
    """Why this layer cannot run in `sparse` mode here (it stays materialized), or None."""
    if device.type != "cpu":
        return "the sparse kernel runs on CPU"
    if isinstance(layer, GluestickConv2d):
        return "convolutions are not supported by the sparse kernel"
    return None


class SparseGluestickLinear(GluestickLinear):
    """A pruned linear layer whose weight is only its packed form (see the module docstring)."""

    def __init__(
        self,
        packed: dict[str, torch.Tensor],
        shape: tuple[int, int],
        pattern: str,
        method: str,
        bias: torch.Tensor | None,
        factors: dict[str, torch.Tensor] | None,
        factor_dtype: str,
    ) -> None:
        """`packed` as `packing.pack` writes it (validated here, once: lengths, index ranges and
        order, bitmask count); `factors` a/b/a_scale/b_scale in their storage dtype, or None."""
        nn.Module.__init__(self)
        self.out_features, self.in_features = shape
        self.weight_shape = tuple(shape)
        self.pattern, self.method, self.factor_dtype = pattern, method, factor_dtype
        self.spectrum, self.singular_values = None, None
        self._pattern = parse_pattern(pattern)
        values = packed["values"].contiguous()
        if values.dtype not in _VALUE_DTYPES:
            raise ValueError(f"sparse layer values are {values.dtype}; use one of {_VALUE_DTYPES}")
        self.weight_dtype = values.dtype
        k = kernel()
        self.register_buffer("values", values)
        if self._pattern.kind == "nm":
            self.register_buffer("indices", packed["indices"].contiguous())
            if k is not None:
                k.validate_nm(self.indices, self._pattern.n, self._pattern.m, *shape)
            elif values.numel() != shape[0] * shape[1] // self._pattern.m * self._pattern.n:
                raise ValueError(f"{values.numel()} values do not fit a {pattern} {shape} layer")
        else:
            self.register_buffer("bitmask", packed["bitmask"].contiguous())
            if k is not None:
                offsets = k.bitmask_row_offsets(self.bitmask, *shape, values.numel())
                self.register_buffer("row_offsets", offsets)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        empty = torch.zeros(0, 0)
        one = torch.ones(())
        f = factors or {}
        self.register_buffer("a", f.get("a", empty).contiguous())
        self.register_buffer("b", f.get("b", empty).contiguous())
        self.register_buffer("a_scale", f.get("a_scale", one).float().reshape(()))
        self.register_buffer("b_scale", f.get("b_scale", one).float().reshape(()))
        self.compiled = k is not None

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 (nn.Module's signature)
        """Device moves only for the packed storage: a dtype cast of the model must not widen
        (or narrow) the values, indices or factors; the bias follows the model."""
        kept = {key: self._buffers[key] for key in _STORAGE if key in self._buffers}
        for key in kept:
            del self._buffers[key]
        try:
            super()._apply(fn, recurse)
        finally:
            for key, t in kept.items():
                moved = fn(torch.empty(0, dtype=t.dtype, device=t.device))
                if moved.device != t.device:
                    raise ValueError(f"sparse layers stay on CPU, not {moved.device}")
                self._buffers[key] = t
        return self

    def packed(self) -> dict[str, torch.Tensor]:
        keys = ("values", "indices") if hasattr(self, "indices") else ("values", "bitmask")
        return {key: getattr(self, key) for key in keys}

    def dense_weight(self) -> torch.Tensor:
        """The dense pruned weight, for comparison only (never used by `forward` with the
        kernel)."""
        return unpack(self.packed(), self.pattern, self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not self.compiled:  # pure-PyTorch packed path
            w = self.dense_weight().to(x.dtype)
            y = F.linear(x2, w, None if self.bias is None else self.bias.to(x.dtype))
            if self.rank:
                a = dequantize(self.a, self.a_scale, x.dtype)
                b = dequantize(self.b, self.b_scale, x.dtype)
                y = y + F.linear(F.linear(x2, b), a)
            return y.reshape(*lead, self.out_features)
        k = kernel()
        # the buffers read straight from their dict: nn.Module.__getattr__ costs about half a
        # microsecond a name, and a small layer's whole call (the embedded VLA's) is ~20 us
        buf = self._buffers
        a = buf["a"]
        if a.numel():
            fa = (a, buf["b"])
            scales = (float(buf["a_scale"]), float(buf["b_scale"]))
        else:
            fa, scales = (None, None), (1.0, 1.0)
        if "indices" in buf:
            y = k.nm_linear(
                x2,
                buf["values"],
                buf["indices"],
                self._pattern.n,
                self._pattern.m,
                self.out_features,
                self.in_features,
                self.bias,
                *fa,
                *scales,
            )
        else:
            y = k.bitmask_linear(
                x2,
                buf["values"],
                buf["bitmask"],
                buf["row_offsets"],
                self.out_features,
                self.in_features,
                self.bias,
                *fa,
                *scales,
            )
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        return y if x.dim() == 2 else y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        kind = "compiled kernel" if self.compiled else "pure-PyTorch"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"pattern={self.pattern}, rank={self.rank}, values={self.weight_dtype}, {kind}"
        )


def to_sparse(layer: GluestickLinear, storage_dtype: torch.dtype | None = None) -> GluestickLinear:
    """A materialized GluestickLinear as a SparseGluestickLinear (for models already in memory;
    artifacts load straight into the sparse layout with `from_packed`)."""
    from vla_pruned_ros.compression.packing import pack

    stored = layer.weight.detach().to(storage_dtype or layer.weight.dtype)
    packed = pack(stored, layer.pattern)
    factors = (
        {key: getattr(layer, key) for key in ("a", "b", "a_scale", "b_scale")}
        if layer.rank
        else None
    )
    out = SparseGluestickLinear(
        packed,
        tuple(layer.weight.shape),
        layer.pattern,
        layer.method,
        layer.bias,
        factors,
        layer.factor_dtype,
    )
    out.spectrum, out.singular_values = layer.spectrum, layer.singular_values
    return out


def sparse_fallback_note() -> str | None:
    """Why `sparse` layers run the pure-PyTorch path here, or None when they use the kernel."""
    return kernel_unavailable_reason()


def from_loaded(layer: GluestickLinear, packed: dict[str, torch.Tensor]) -> SparseGluestickLinear:
    """The sparse layer for a layer `load_artifact` filled from an artifact (its weight left on
    the meta device, never unpacked): packed tensors, bias and factors as the files hold them
    (float16 factors kept float16)."""
    factors = None
    if layer.rank:
        keep = torch.float16 if layer.factor_dtype == "float16" else None
        factors = {
            key: (t.to(keep) if keep is not None and key in ("a", "b") else t)
            for key, t in ((k, getattr(layer, k)) for k in ("a", "b", "a_scale", "b_scale"))
        }
    out = SparseGluestickLinear(
        packed,
        (layer.out_features, layer.in_features),
        layer.pattern,
        layer.method,
        layer.bias,
        factors,
        layer.factor_dtype,
    )
    out.spectrum, out.singular_values = layer.spectrum, layer.singular_values
    return out
