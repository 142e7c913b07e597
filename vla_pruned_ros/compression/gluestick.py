"""GLUESTICK: a rank-r correction of what pruning removed, kept as two thin factors.

Per pruned layer, W_gap = W_dense - W_pruned; its truncated SVD W_gap ~ U_r S_r V_r^T is stored as
A = U_r S_r (d_out x r) and B = V_r^T (r x d_in), and the layer computes
y = W_pruned x + b + A (B x). By Eckart-Young the Frobenius error of the correction is the norm
of the discarded singular values; r = 0 is the pruned layer, r >= min(d_out, d_in) the dense one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class GapFactors:
    a: torch.Tensor  # (d_out, r) = U_r S_r
    b: torch.Tensor  # (r, d_in) = V_r^T
    singular_values: torch.Tensor  # all of them, descending (for spectrum statistics)

    @property
    def rank(self) -> int:
        return self.a.shape[1]

    def frobenius_error(self) -> float:
        """||W_gap - A B||_F, from the discarded singular values (Eckart-Young)."""
        return float(self.singular_values[self.rank :].square().sum().sqrt())

    def energy_kept(self) -> float:
        total = self.singular_values.square().sum()
        return float(self.singular_values[: self.rank].square().sum() / total) if total > 0 else 1.0


def gap_factors(dense: torch.Tensor, pruned: torch.Tensor, rank: int) -> GapFactors:
    """Exact truncated SVD of the pruning gap, in float64 (one layer at a time, offline)."""
    if dense.shape != pruned.shape:
        raise ValueError(f"dense {tuple(dense.shape)} and pruned {tuple(pruned.shape)} differ")
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    gap = (dense.detach().double() - pruned.detach().double()).reshape(dense.shape[0], -1)
    u, s, vh = torch.linalg.svd(gap, full_matrices=False)
    r = min(rank, s.numel())
    a = (u[:, :r] * s[:r]).to(dense.dtype)
    return GapFactors(a, vh[:r].to(dense.dtype), s)


class GluestickLinear(nn.Module):
    """A pruned linear layer with an optional rank-r correction: W_p x + b + A (B x)."""

    def __init__(self, pruned: nn.Linear, factors: GapFactors | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = pruned.in_features, pruned.out_features
        self.weight = nn.Parameter(pruned.weight.detach().clone(), requires_grad=False)
        self.bias = (
            None
            if pruned.bias is None
            else nn.Parameter(pruned.bias.detach().clone(), requires_grad=False)
        )
        r = factors.rank if factors is not None else 0
        self.register_buffer("a", factors.a.clone() if r else self.weight.new_zeros(0, 0))
        self.register_buffer("b", factors.b.clone() if r else self.weight.new_zeros(0, 0))

    @property
    def rank(self) -> int:
        return self.a.shape[1] if self.a.numel() else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.rank:
            y = y + F.linear(F.linear(x, self.b), self.a)
        return y
