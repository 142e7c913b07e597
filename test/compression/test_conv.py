"""Conv2d layers (optional, `conv=True`): pruned as the (out, in*kh*kw) matrix the convolution
multiplies with, corrected by a rank-r conv + 1x1 conv, stored and loaded like linear layers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from vla_pruned_ros.compression import (
    gluestick,
    load_artifact,
    memory_report,
    prune,
    save_artifact,
    select_linear,
)
from vla_pruned_ros.compression.calibration import collect_input_stats
from vla_pruned_ros.compression.gluestick import GluestickConv2d


def _net(seed: int = 0, stride: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=stride, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.Flatten(),
        nn.LazyLinear(4),
    )


def _built(seed: int = 0, stride: int = 1) -> nn.Module:
    net = _net(seed, stride)
    net(torch.zeros(1, 4, 8, 8))  # materialise the lazy head
    return net.eval()


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([1, 2]))
def test_conv_pattern_full_rank_and_rank_zero(seed, stride) -> None:
    dense = _built(seed, stride)
    assert select_linear(dense) == ["4"] and select_linear(dense, conv=True) == ["0", "2", "4"]
    pruned = prune(dense, "magnitude", "2:4", conv=True, exclude=["4"])
    assert isinstance(pruned[0], GluestickConv2d)
    for i in (0, 2):
        w = pruned[i].weight.reshape(pruned[i].weight.shape[0], -1, 4)
        assert torch.all((w != 0).sum(-1) == 2)
    x = torch.randn(2, 4, 8, 8)
    full = gluestick(dense, pruned, 10_000)
    torch.testing.assert_close(full(x), dense(x), atol=1e-4, rtol=1e-4)
    plain = nn.Sequential(*[m for m in dense])
    with torch.no_grad():
        for i in (0, 2):
            plain[i].weight.copy_(pruned[i].weight)
    torch.testing.assert_close(pruned(x), plain(x))
    mid = gluestick(dense, pruned, 3)
    for i in (0, 2):  # Eckart-Young on the flattened kernels: the weight error shrinks
        gap = (dense[i].weight - pruned[i].weight).detach().reshape(dense[i].weight.shape[0], -1)
        left = gap - mid[i].a.float() @ mid[i].b.float()
        assert float(left.norm()) < float(gap.norm()) or float(gap.norm()) == 0
        assert float(left.norm()) == pytest.approx(
            mid[i].spectrum["relative_error"] * float(gap.norm()), rel=1e-3, abs=1e-5
        )


def test_conv_calibration_and_wanda_follow_the_unfolded_patches() -> None:
    dense = _built(3)
    calib = [torch.randn(2, 4, 8, 8) * torch.tensor([1.0, 5.0, 0.1, 2.0]).view(1, 4, 1, 1)]
    stats = collect_input_stats(dense, ["0"], calib)["0"]
    patches = F.unfold(calib[0], 3, padding=1).transpose(1, 2).reshape(-1, 36).double()
    torch.testing.assert_close(stats.feature_norms(), patches.norm(dim=0))
    pruned = prune(dense, "wanda", "unstructured:0.5", calib=calib, conv=True, exclude=["4"])
    w = dense[0].weight.reshape(8, -1).detach().abs().double() * patches.norm(dim=0)
    kept = pruned[0].weight.reshape(8, -1) != 0
    for row in range(8):  # each output channel keeps its 18 highest-scoring weights
        assert set(torch.argsort(w[row], descending=True)[:18].tolist()) == set(
            torch.nonzero(kept[row]).flatten().tolist()
        )
    sgpt = prune(dense, "sparsegpt", "2:4", calib=calib, conv=True, exclude=["4"])
    assert torch.all((sgpt[0].weight.reshape(8, -1, 4) != 0).sum(-1) <= 2)


@pytest.mark.parametrize("factor_dtype", ["float32", "int8"])
def test_conv_artifact_round_trips(tmp_path, factor_dtype) -> None:
    dense = _built(5, stride=2)
    model = gluestick(dense, prune(dense, "magnitude", "unstructured:0.5", conv=True), 4,
                      factor_dtype=factor_dtype)  # fmt: skip
    folder = save_artifact(model, tmp_path / "art")
    x = torch.randn(3, 4, 8, 8)
    for mode in ("materialize", "packed", "semi_structured"):
        with pytest.warns(UserWarning) if mode == "semi_structured" else _nothing():
            loaded = load_artifact(folder, lambda: _built(9, stride=2), mode=mode)
        assert torch.equal(loaded(x), model(x)), mode
    assert "conv" in next(iter(loaded.artifact["fallbacks"].values())) or (
        "CUDA" in next(iter(loaded.artifact["fallbacks"].values()))
    )
    report = memory_report(model)
    assert report["compressed_layers"] == 3
    assert report["params_dense"] == sum(p.numel() for p in dense.parameters())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
