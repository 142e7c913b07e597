"""How a loaded artifact's pruned layers hold their weights at inference.

- `materialize`: the dense pruned weight is rebuilt once (zeros included); fastest on CPU.
- `packed`: values and indices/bitmask stay packed and are expanded for each forward; least
  resident memory, at the cost of the expansion.
- `semi_structured`: PyTorch's 2:4 sparse kernels (cuSPARSELt/CUTLASS) on CUDA. Layers that
  cannot take them (not 2:4, or shapes the kernels refuse) stay materialized, and the model says
  which, so a user never mistakes a fallback for a speed-up.
- `sparse`: the compiled CPU kernel computes from the packed form (`sparse_runtime.py`); no
  dense copy of a layer exists at load or forward. Convolutions stay materialized (said per layer).

Which layer takes which mode (and the list of modes, `auto` the default) is `runtime_modes.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_pruned_ros.compression.gluestick import GluestickConv2d, GluestickLinear
from vla_pruned_ros.compression.packing import pack, unpack


class PackedGluestickLinear(GluestickLinear):
    """GluestickLinear whose pruned weight stays packed between forwards."""

    def __init__(self, layer: GluestickLinear, storage_dtype: torch.dtype | None = None) -> None:
        """`storage_dtype` (e.g. float16) keeps the packed values narrower than the compute
        dtype; they are widened only inside each forward."""
        nn.Module.__init__(self)
        self.in_features, self.out_features = layer.in_features, layer.out_features
        for key in ("kernel_size", "in_channels", "stride", "padding", "dilation"):
            if hasattr(layer, key):
                setattr(self, key, getattr(layer, key))
        self.pattern, self.method, self.factor_dtype = (
            layer.pattern,
            layer.method,
            layer.factor_dtype,
        )
        self.spectrum, self.singular_values = layer.spectrum, layer.singular_values
        self.weight_shape = tuple(layer.weight.shape)
        self.weight_dtype = layer.weight.dtype
        stored = layer.weight.detach().to(storage_dtype or layer.weight.dtype)
        for key, tensor in pack(stored, layer.pattern).items():
            self.register_buffer(key, tensor)
        self.bias = layer.bias
        for key in ("a", "b", "a_scale", "b_scale"):
            self.register_buffer(key, getattr(layer, key))

    def packed(self) -> dict[str, torch.Tensor]:
        keys = ("values", "indices") if hasattr(self, "indices") else ("values", "bitmask")
        return {k: getattr(self, k) for k in keys}

    def dense_weight(self) -> torch.Tensor:
        return unpack(self.packed(), self.pattern, self.weight_shape).to(self.weight_dtype)


class PackedGluestickConv2d(PackedGluestickLinear, GluestickConv2d):
    """GluestickConv2d whose pruned weight stays packed between forwards."""

    forward = GluestickConv2d.forward
    correction = GluestickConv2d.correction


def to_packed(layer: GluestickLinear, storage_dtype: torch.dtype | None) -> GluestickLinear:
    cls = PackedGluestickConv2d if isinstance(layer, GluestickConv2d) else PackedGluestickLinear
    return cls(layer, storage_dtype)


def semi_structured_reason(layer: GluestickLinear, device: torch.device) -> str | None:
    """Why this layer cannot use the 2:4 kernels here, or None if it can."""
    if device.type != "cuda":
        return "2:4 kernels need CUDA"
    if isinstance(layer, GluestickConv2d):
        return "convolutions have no 2:4 kernels"
    if layer.pattern != "2:4":
        return f"pattern {layer.pattern} is not 2:4"
    d_out, d_in = layer.weight.shape
    if d_out % 32 or d_in % 64:
        return f"shape {d_out}x{d_in} (needs d_out % 32 == 0 and d_in % 64 == 0)"
    if layer.weight.dtype not in (torch.float16, torch.bfloat16):
        return f"dtype {layer.weight.dtype} (needs float16 or bfloat16)"
    return None


def to_semi_structured(layer: GluestickLinear) -> None:
    """In place: the layer's weight becomes a SparseSemiStructuredTensor."""
    from torch.sparse import to_sparse_semi_structured

    layer.weight = nn.Parameter(
        to_sparse_semi_structured(layer.weight.detach()), requires_grad=False
    )
