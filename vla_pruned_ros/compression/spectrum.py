"""Spectrum statistics of a pruning gap, so a user can check the paper's "flat spectrum" argument
on their own model: a flat spectrum means a small rank keeps little of the gap's energy."""

from __future__ import annotations

import math

import torch


def energy_kept(singular_values: torch.Tensor, rank: int) -> float:
    """Share of ||W_gap||_F^2 that the top-`rank` singular triplets hold."""
    e = singular_values.detach().double().square()
    total = float(e.sum())
    return float(e[:rank].sum()) / total if total > 0 else 1.0


def rank_for_energy(singular_values: torch.Tensor, fraction: float) -> int:
    """Smallest rank keeping at least `fraction` of the gap energy."""
    e = singular_values.detach().double().square()
    total = float(e.sum())
    if total == 0 or fraction <= 0:
        return 0
    cumulative = torch.cumsum(e, 0) / total
    return min(
        int(torch.searchsorted(cumulative, torch.tensor(fraction - 1e-12).double())) + 1, e.numel()
    )


def effective_rank(singular_values: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values.
    Equals k for k equal singular values; large means flat."""
    s = singular_values.detach().double()
    total = float(s.sum())
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def spectrum_stats(singular_values: torch.Tensor, rank: int) -> dict[str, float | int]:
    s = singular_values.detach().double()
    return {
        "rank": int(rank),
        "full_rank": int(s.numel()),
        "energy_kept": round(energy_kept(s, rank), 6),
        "effective_rank": round(effective_rank(s), 3),
        "rank_90": rank_for_energy(s, 0.90),
        "rank_99": rank_for_energy(s, 0.99),
        "top_singular_value": float(s[0]) if s.numel() else 0.0,
        "gap_norm": float(s.square().sum().sqrt()),
    }
