"""Wanda and SparseGPT against brute force, and the calibration contract of prune()."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vla_pruned_ros.compression import GluestickLinear, prune
from vla_pruned_ros.compression.calibration import collect_input_stats
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.sparsegpt import sparsegpt_weight


def _layer_and_calib(d_out: int, d_in: int, seed: int) -> tuple[nn.Linear, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in, generator=g))
    # input features of very different scales, so Wanda and magnitude disagree
    scale = torch.rand(d_in, generator=g) * 10
    calib = [torch.randn(3, 5, d_in, generator=g) * scale for _ in range(3)]
    return layer, calib


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 4).map(lambda k: 4 * k),
    st.integers(0, 10_000),
    st.sampled_from(["2:4", "1:4", "unstructured:0.5", "unstructured:0.3"]),
)
def test_wanda_removes_exactly_the_lowest_scoring_weights(d_out, d_in, seed, spec) -> None:
    layer, calib = _layer_and_calib(d_out, d_in, seed)
    pruned = prune(nn.Sequential(layer), "wanda", spec, calib=calib)[0]
    # brute force: score every weight by |W_ij| * ||X_j||_2 over all calibration tokens
    x = torch.cat([c.reshape(-1, d_in) for c in calib]).double()
    norms = (x**2).sum(0).sqrt()
    pattern = parse_pattern(spec)
    w = layer.weight.detach()
    for i in range(d_out):
        score = [abs(float(w[i, j])) * float(norms[j]) for j in range(d_in)]
        groups = (
            [range(s, s + pattern.m) for s in range(0, d_in, pattern.m)]
            if pattern.kind == "nm"
            else [range(d_in)]
        )
        for grp in groups:
            ranked = sorted(grp, key=lambda j: (score[j], j))
            n_drop = (
                (pattern.m - pattern.n) if pattern.kind == "nm" else round(pattern.sparsity * d_in)
            )
            dropped = set(ranked[:n_drop])
            for j in grp:
                expected = 0.0 if j in dropped else float(w[i, j])
                assert float(pruned.weight[i, j]) == expected, (i, j)


def test_calibration_statistics_match_the_inputs() -> None:
    layer, calib = _layer_and_calib(3, 8, 1)
    stats = collect_input_stats(nn.Sequential(layer), ["0"], calib, with_hessian=True)["0"]
    x = torch.cat([c.reshape(-1, 8) for c in calib]).double()
    torch.testing.assert_close(stats.feature_norms(), x.norm(dim=0))
    torch.testing.assert_close(stats.hessian(), 2 * x.T @ x / x.shape[0])
    assert stats.count == 45


@pytest.mark.parametrize("spec", ["2:4", "4:8", "unstructured:0.5"])
def test_sparsegpt_keeps_the_pattern_and_beats_magnitude_on_the_calibration_data(spec) -> None:
    torch.manual_seed(0)
    layer, calib = _layer_and_calib(32, 64, 3)
    stats = collect_input_stats(nn.Sequential(layer), ["0"], calib, with_hessian=True)["0"]
    pattern = parse_pattern(spec)
    w = sparsegpt_weight(layer.weight, stats.hessian(), pattern)
    if pattern.kind == "nm":
        assert torch.all((w.reshape(32, -1, pattern.m) != 0).sum(-1) <= pattern.n)
    else:
        assert (w == 0).sum() == pytest.approx(0.5 * w.numel(), abs=32)
    assert not torch.signbit(w[w == 0]).any()  # +0.0, so packing round-trips bit-exactly
    mag = prune(nn.Sequential(layer), "magnitude", spec)[0].weight
    x = torch.cat([c.reshape(-1, 64) for c in calib])
    err_sgpt = (x @ (layer.weight - w).T).norm()
    err_mag = (x @ (layer.weight - mag).T).norm()
    assert err_sgpt < err_mag


def test_prune_keeps_its_contract_and_says_what_is_wrong() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 2))
    calib = [torch.randn(4, 8) for _ in range(2)]
    for method in ("wanda", "sparsegpt"):
        with pytest.raises(ValueError, match=f"{method} needs calibration data"):
            prune(model, method, "2:4", exclude=["4"])
        with pytest.raises(ValueError, match="calibration set is empty"):
            prune(model, method, "2:4", calib=[], exclude=["4"])
        out = prune(model, method, "2:4", calib=calib, exclude=["4"])
        assert isinstance(out[0], GluestickLinear) and out[0].method == method
        assert isinstance(out[4], nn.Linear)
    with pytest.raises(ValueError, match="multiples of 4.*4 \\(d_in=6\\)"):
        prune(model, "magnitude", "2:4")
