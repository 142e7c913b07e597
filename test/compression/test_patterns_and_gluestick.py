"""Properties of the sparsity masks and of the GLUESTICK gap factors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vla_pruned_ros.compression.gluestick import GluestickLinear, gap_factors
from vla_pruned_ros.compression.patterns import parse_pattern, prune_mask

shapes = st.tuples(st.integers(1, 12), st.integers(1, 6).map(lambda k: 8 * k))


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(["2:4", "4:8", "1:4"]), st.integers(0, 10_000))
def test_every_nm_group_keeps_exactly_n(shape, spec, seed) -> None:
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    pattern = parse_pattern(spec)
    keep = prune_mask(scores, pattern)
    groups = keep.reshape(shape[0], -1, pattern.m)
    assert torch.all(groups.sum(-1) == pattern.n)
    # and the kept ones are the largest of their group
    s = scores.reshape(shape[0], -1, pattern.m)
    assert torch.all(
        s.masked_fill(~groups, float("inf")).amin(-1)
        >= s.masked_fill(groups, -float("inf")).amax(-1)
    )


@settings(max_examples=40, deadline=None)
@given(shapes, st.floats(0.0, 0.95), st.integers(0, 10_000))
def test_unstructured_hits_its_fraction_exactly(shape, fraction, seed) -> None:
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    keep = prune_mask(scores, fraction)
    assert (~keep).sum().item() == round(fraction * scores.numel())


def test_bad_patterns_and_shapes_are_clear_errors() -> None:
    for bad in ("3:2", "0:4", "unstructured:1.5", "x:y"):
        with pytest.raises(ValueError, match="bad sparsity pattern"):
            parse_pattern(bad)
    with pytest.raises(ValueError, match="not a multiple of M=4"):
        prune_mask(torch.randn(3, 6), "2:4")


def _pruned_pair(d_out: int, d_in: int, seed: int) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    dense = nn.Linear(d_in, d_out)
    pruned = nn.Linear(d_in, d_out)
    with torch.no_grad():
        pruned.bias.copy_(dense.bias)
        pruned.weight.copy_(dense.weight * prune_mask(dense.weight.abs(), "2:4"))
    return dense, pruned


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 24), st.integers(1, 6).map(lambda k: 4 * k), st.integers(0, 1000))
def test_gluestick_between_pruned_and_dense(d_out, d_in, seed) -> None:
    dense, pruned = _pruned_pair(d_out, d_in, seed)
    x = torch.randn(5, d_in)
    full = GluestickLinear(pruned, gap_factors(dense.weight, pruned.weight, min(d_out, d_in)))
    none = GluestickLinear(pruned, gap_factors(dense.weight, pruned.weight, 0))
    torch.testing.assert_close(full(x), dense(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(none(x), pruned(x))
    gap = (dense.weight - pruned.weight).detach().double()
    errors = []
    for r in range(min(d_out, d_in) + 1):
        f = gap_factors(dense.weight, pruned.weight, r)
        actual = float(torch.linalg.norm(gap - (f.a @ f.b).double()))
        assert actual == pytest.approx(f.error, abs=1e-4)  # Eckart-Young
        errors.append(actual)
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:], strict=False))


def test_prune_and_gluestick_on_a_model_leave_the_input_untouched() -> None:
    from vla_pruned_ros.compression.prune import gluestick, prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, "magnitude", "2:4", exclude=["4"])  # keep the head dense
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(pruned[0], GluestickLinear) and isinstance(pruned[4], nn.Linear)
    assert (pruned[0].weight == 0).float().mean() == 0.5
    x = torch.randn(4, 8)
    full = gluestick(model, pruned, rank=16)
    torch.testing.assert_close(full(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no linear layer matches"):
        prune(model, "magnitude", "2:4", include=["nothing*"])
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune(model, "lottery", "2:4")
