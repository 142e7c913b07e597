"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning that repairs as it removes.

Columns are visited left to right in blocks. Within a block, the mask is chosen by the OBS
saliency w^2 / [H^-1]_jj^2 (per N:M group as it is reached, or per block for an unstructured
fraction), and each removed weight's error is pushed onto the columns not yet visited through
the upper Cholesky factor of H^-1, so later weights absorb what earlier ones lost. The damping
term (a fraction of the mean Hessian diagonal) keeps H invertible when calibration is thin.
"""

from __future__ import annotations

import torch

from vla_pruned_ros.compression.patterns import Pattern, prune_mask


def sparsegpt_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    pattern: Pattern,
    damp: float = 0.01,
    block: int = 128,
) -> torch.Tensor:
    """The pruned and repaired weight (same shape and dtype); zeros are exactly +0.0."""
    w = weight.detach().double().reshape(weight.shape[0], -1).clone()
    d_in = w.shape[1]
    if pattern.kind == "nm":
        block = max(pattern.m, block - block % pattern.m)
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(d_in, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    keep = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, d_in, block):
        i2 = min(i1 + block, d_in)
        w1 = w[:, i1:i2].clone()
        h1 = hinv[i1:i2, i1:i2]
        d1 = torch.diag(h1)
        err1 = torch.zeros_like(w1)
        if pattern.kind == "unstructured":
            keep[:, i1:i2] = prune_mask(w1.square() / d1.square(), pattern)
        for i in range(i2 - i1):
            if pattern.kind == "nm" and i % pattern.m == 0:
                group = slice(i, i + pattern.m)
                keep[:, i1 + i : i1 + i + pattern.m] = prune_mask(
                    w1[:, group].square() / d1[group].square(), pattern
                )
            col = w1[:, i]
            kept = torch.where(keep[:, i1 + i], col, torch.zeros_like(col))
            err = (col - kept) / d1[i]
            w1[:, i:] -= err.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            w1[:, i] = kept
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    w = torch.where(keep, w, torch.zeros_like(w))
    return w.reshape(weight.shape).to(weight.dtype)
