"""Sparsity patterns: which weights a pruning score removes.

Masks keep exactly what the pattern promises: an unstructured fraction removes exactly
round(fraction * numel) weights of the whole tensor, and N:M keeps exactly N weights in every
group of M consecutive weights along the input dimension. Ties are broken by position (stable
sort), so the same scores always give the same mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Pattern:
    """`unstructured` with `sparsity` in [0, 1), or N:M (`n` kept of every `m`)."""

    kind: str
    sparsity: float = 0.0
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "nm" else f"unstructured:{self.sparsity:g}"


def parse_pattern(spec: str | float | Pattern) -> Pattern:
    """ "2:4", "4:8", "unstructured:0.5" or a float fraction; the one parser of pattern names."""
    if isinstance(spec, Pattern):
        return spec
    if isinstance(spec, (int, float)) or (isinstance(spec, str) and ":" not in spec):
        spec = f"unstructured:{spec}"
    head, _, tail = spec.partition(":")
    try:
        if head == "unstructured":
            fraction = float(tail)
            if not 0.0 <= fraction < 1.0:
                raise ValueError
            return Pattern("unstructured", sparsity=fraction)
        n, m = int(head), int(tail)
        if not 0 < n < m:
            raise ValueError
        return Pattern("nm", sparsity=1 - n / m, n=n, m=m)
    except ValueError:
        raise ValueError(
            f"bad sparsity pattern {spec!r}: use 'N:M' with 0 < N < M (e.g. '2:4') or "
            "'unstructured:F' with 0 <= F < 1"
        ) from None


def prune_mask(
    scores: torch.Tensor, pattern: Pattern | str | float, per_row: bool = False
) -> torch.Tensor:
    """Boolean mask of the weights to KEEP, removing the lowest scores per the pattern.

    `per_row` makes an unstructured fraction hold in every output row (Wanda compares weights
    only within a row, so one loud input channel cannot empty whole rows); N:M groups are always
    within a row.
    """
    pattern = parse_pattern(pattern)
    if pattern.kind == "unstructured":
        rows = scores.reshape(scores.shape[0], -1) if per_row else scores.reshape(1, -1)
        k = round(pattern.sparsity * rows.shape[1])
        keep = torch.ones_like(rows, dtype=torch.bool)
        if k:
            keep.scatter_(1, torch.argsort(rows, dim=1, stable=True)[:, :k], False)
        return keep.view_as(scores)
    d_out, d_in = scores.shape[0], scores[0].numel()
    if d_in % pattern.m:
        raise ValueError(f"input dimension {d_in} is not a multiple of M={pattern.m} for {pattern}")
    groups = scores.reshape(d_out, d_in // pattern.m, pattern.m)
    drop = torch.argsort(groups, dim=-1, stable=True)[..., : pattern.m - pattern.n]
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(-1, drop, False)
    return keep.view_as(scores)
