"""GLUESTICK factors beyond the exact SVD: randomized SVD, int8/fp16 storage, rank policies and
spectrum statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vla_pruned_ros.compression import (
    BudgetRank,
    EnergyRank,
    GluestickLinear,
    gap_factors,
    gluestick,
    parse_rank_policy,
    prune,
)
from vla_pruned_ros.compression.quantize import quantization_bound, quantize
from vla_pruned_ros.compression.rank_policy import FACTOR_BYTES, LayerSpectrum
from vla_pruned_ros.compression.spectrum import effective_rank, energy_kept, rank_for_energy


def _gap_pair(d_out: int, d_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(d_out, d_in, generator=g)
    keep = torch.rand(d_out, d_in, generator=g) > 0.5
    return dense, torch.where(keep, dense, torch.zeros_like(dense))


@settings(max_examples=15, deadline=None)
@given(st.integers(20, 60), st.integers(20, 60), st.integers(1, 10), st.integers(0, 1000))
def test_randomized_svd_reports_its_true_error_close_to_the_optimum(d_out, d_in, r, seed) -> None:
    dense, pruned = _gap_pair(d_out, d_in, seed)
    oversample = 5
    f = gap_factors(dense, pruned, r, svd="randomized", oversample=oversample, power_iters=2)
    exact = gap_factors(dense, pruned, r)
    gap = (dense - pruned).double()
    achieved = float(torch.linalg.matrix_norm(gap - (f.a @ f.b).double()))
    assert achieved == pytest.approx(f.error, rel=1e-4, abs=1e-4)  # it reports what it achieved
    assert f.error >= exact.error - 1e-4  # never better than Eckart-Young
    # Halko-Martinsson-Tropp expected bound; power iterations only tighten it
    assert f.error <= math.sqrt(1 + r / (oversample - 1)) * exact.error + 1e-4
    assert 0 <= f.relative_error <= 1


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.integers(0, 1000),
    st.sampled_from(["int8", "float16"]),
)
def test_stored_factors_stay_within_their_quantisation_bound(d_out, d_in, seed, dtype) -> None:
    t = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(seed)) * 3
    stored, scale = quantize(t, dtype)
    back = stored.float() * scale
    bound = quantization_bound(scale, dtype) if dtype == "int8" else float(t.abs().max()) * 2**-11
    assert float((back - t).abs().max()) <= bound + 1e-7
    if dtype == "int8":
        assert stored.dtype == torch.int8 and int(stored.abs().max()) <= 127


def test_int8_layer_output_error_within_the_bound_of_its_factors() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(32, 24)
    pruned = prune(nn.Sequential(dense), "magnitude", "2:4")[0]
    f = gap_factors(dense.weight, pruned.weight, 8)
    fp32 = GluestickLinear(pruned, f, "float32")
    int8 = GluestickLinear(pruned, f, "int8")
    x = torch.randn(10, 32)
    # |A'B' - AB| <= |dA||B| + |A||dB| + |dA||dB| elementwise, summed over the rank
    da, db = quantization_bound(int8.a_scale, "int8"), quantization_bound(int8.b_scale, "int8")
    delta = (
        f.a.abs() @ torch.full_like(f.b, db)
        + torch.full_like(f.a, da) @ f.b.abs()
        + torch.full_like(f.a, da) @ torch.full_like(f.b, db)
    )
    bound = x.abs() @ delta.T
    assert torch.all((int8(x) - fp32(x)).abs() <= bound + 1e-5)
    assert int8.a.dtype == torch.int8 and int8.a.element_size() == 1


def test_spectrum_statistics_on_known_spectra() -> None:
    flat = torch.ones(16)
    assert effective_rank(flat) == pytest.approx(16)
    assert energy_kept(flat, 4) == pytest.approx(0.25)
    assert rank_for_energy(flat, 0.9) == 15  # 15/16 >= 0.9 > 14/16
    steep = torch.tensor([10.0, 1.0, 0.1, 0.01])
    assert effective_rank(steep) < 1.5
    assert rank_for_energy(steep, 0.99) == 1


def test_energy_policy_keeps_the_fraction_in_every_layer() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
    pruned = prune(model, "magnitude", "2:4")
    for fraction in (0.5, 0.9, 0.99):
        out = gluestick(model, pruned, EnergyRank(fraction))
        for name in ("0", "2"):
            layer = out.get_submodule(name)
            assert layer.spectrum["energy_kept"] >= fraction - 1e-6
            # and one triplet fewer would not have been enough
            s = torch.linalg.svdvals((model.get_submodule(name).weight - layer.weight).double())
            assert energy_kept(s, layer.rank - 1) < fraction


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.tuples(st.integers(2, 12), st.integers(2, 12)), min_size=1, max_size=4),
    st.floats(0.0, 0.01),
    st.integers(0, 1000),
    st.sampled_from(sorted(FACTOR_BYTES)),
)
def test_budget_policy_stays_within_budget_and_spends_greedily(shapes, mb, seed, dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    spectra = {
        f"l{i}": LayerSpectrum(
            torch.sort(torch.rand(min(o, n), generator=g), descending=True).values, o, n
        )
        for i, (o, n) in enumerate(shapes)
    }
    ranks = BudgetRank(mb).choose(spectra, dtype)
    cost = {k: (s.d_out + s.d_in) * FACTOR_BYTES[dtype] for k, s in spectra.items()}
    spent = sum(ranks[k] * cost[k] for k in spectra)
    assert spent <= mb * 1e6
    # no layer's next triplet both fits the leftover budget and beats a triplet taken elsewhere
    taken = [
        float(spectra[k].singular_values[ranks[k] - 1]) ** 2 / cost[k] for k in spectra if ranks[k]
    ]
    for k, s in spectra.items():
        if ranks[k] < s.singular_values.numel() and spent + cost[k] <= mb * 1e6:
            pytest.fail(f"budget left for another triplet of {k}")
        if ranks[k] < s.singular_values.numel() and taken:
            nxt = float(s.singular_values[ranks[k]]) ** 2 / cost[k]
            assert nxt <= max(taken) + 1e-12


def test_rank_policy_strings() -> None:
    assert parse_rank_policy(64).rank == 64
    assert parse_rank_policy("rank:8").rank == 8
    assert parse_rank_policy("energy:0.9").fraction == 0.9
    assert parse_rank_policy("budget:5MB").megabytes == 5
    with pytest.raises(ValueError, match="bad rank policy"):
        parse_rank_policy("lots")


@pytest.mark.parametrize("correction", ["svd", "activation"])
def test_streamed_layer_reports_the_spectrum_of_the_in_memory_layer(tmp_path, correction) -> None:
    """`GapFactors.spectrum` is the one builder of a layer's spectrum entry: a layer compressed in
    memory (`GluestickLinear.spectrum`) and the same layer streamed into an artifact
    (`streaming.compress_layer`'s manifest entry) report the same keys and values."""
    from vla_pruned_ros.compression.artifact_write import ArtifactWriter
    from vla_pruned_ros.compression.gluestick import activation_factors
    from vla_pruned_ros.compression.patterns import parse_pattern
    from vla_pruned_ros.compression.streaming import compress_layer

    dense, pruned = _gap_pair(24, 32, seed=3)
    if correction == "activation":
        x = torch.randn(64, 32, generator=torch.Generator().manual_seed(4))
        factors = activation_factors(dense, pruned, 4, x.T @ x)
    else:
        factors = gap_factors(dense, pruned, 4)
    linear = nn.Linear(32, 24, bias=False)
    linear.weight.data = pruned.clone()
    in_memory = GluestickLinear(linear, factors).spectrum
    with ArtifactWriter(tmp_path / "art") as writer:
        entry = compress_layer(
            writer, "w", dense, pruned, parse_pattern("unstructured:0.5"), 4, "exact",
            "float32", None, "magnitude", False, factors=factors,
        )  # fmt: skip
        writer.abort()
    assert entry["spectrum"] == in_memory
    assert in_memory["correction"] == correction
    assert ("damping" in in_memory) == (correction == "activation")
