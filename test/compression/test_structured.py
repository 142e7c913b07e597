"""Structured unit removal and adaptation-divergence scores on a tiny BERT built in code."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

from vla_pruned_ros.compression import load_artifact, save_artifact
from vla_pruned_ros.compression import structured as st

CFG = BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=48,
                 num_hidden_layers=2, vocab_size=50, max_position_embeddings=16)  # fmt: skip


def _bert(seed: int) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(CFG, add_pooling_layer=False).eval()


def _adapted(base: BertModel, seed: int) -> BertModel:
    vla = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vla.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g) * torch.rand((), generator=g))
    return vla


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[1, 5, 9, 3, 7, 2], [4, 4, 8, 1, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


@pytest.mark.parametrize("relative", [False, True])
def test_divergence_matches_brute_force(relative) -> None:
    base = _bert(0).requires_grad_(False)
    vla = _adapted(base, 1).requires_grad_(False)
    units = st.enumerate_units(vla)
    scores = st.divergence_scores(vla, base, units, relative=relative)
    assert len(units) == 2 * (48 + 4)
    for u in units:
        lv, lb = vla.encoder.layer[u.layer], base.encoder.layer[u.layer]
        if u.module == "ffn":
            pairs = [
                (lv.intermediate.dense.weight[u.index], lb.intermediate.dense.weight[u.index]),
                (lv.output.dense.weight[:, u.index], lb.output.dense.weight[:, u.index]),
            ]
        else:
            r = range(8 * u.index, 8 * u.index + 8)  # head size 32 / 4 = 8
            pairs = [
                (lv.attention.self.query.weight[list(r)], lb.attention.self.query.weight[list(r)]),
                (lv.attention.self.key.weight[list(r)], lb.attention.self.key.weight[list(r)]),
            ]
        expected = 0.0
        for a, b in pairs:
            d = sum(float(x - y) ** 2 for x, y in zip(a.flatten(), b.flatten(), strict=True)) ** 0.5
            n = sum(float(y) ** 2 for y in b.flatten()) ** 0.5
            expected += d / n if relative else d
        assert scores[u] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    same = st.divergence_scores(base, base, units)
    assert all(v == 0 for v in same.values())


def _masked(model: BertModel, units: list[st.Unit]) -> BertModel:
    out = copy.deepcopy(model)
    with torch.no_grad():
        for u in units:
            layer = out.encoder.layer[u.layer]
            if u.module == "ffn":
                layer.intermediate.dense.weight[u.index] = 0
                layer.intermediate.dense.bias[u.index] = 0
                layer.output.dense.weight[:, u.index] = 0
            else:
                rows = slice(8 * u.index, 8 * u.index + 8)
                layer.attention.self.value.weight[rows] = 0
                layer.attention.self.value.bias[rows] = 0
                layer.attention.output.dense.weight[:, rows] = 0
    return out


@pytest.mark.parametrize("seed", range(4))
def test_removing_units_equals_masking_them_and_shrinks_the_model(seed) -> None:
    model = _bert(seed)
    units = st.enumerate_units(model)
    scores = st.random_scores(units, seed)
    removal = st.choose_removal(scores, "ffn", 0.5) + st.choose_removal(scores, "heads", 0.5)
    smaller, structure = st.remove_units(model, removal)
    with torch.no_grad():
        got = smaller(**_inputs()).last_hidden_state
        want = _masked(model, removal)(**_inputs()).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    removed_params = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in smaller.parameters()
    )
    assert removed_params == 48 * (32 + 1 + 32) + 4 * (3 * 8 * (32 + 1) + 8 * 32)
    assert st.count_removed(structure, model) == {"ffn": 48, "heads": 4}


def test_choose_removal_ranks_across_layers_and_keeps_every_layer_alive() -> None:
    units = st.enumerate_units(_bert(0))
    # layer 0's FFN units all score below layer 1's
    scores = {u: (u.layer * 100 + u.index if u.module == "ffn" else 0.0) for u in units}
    low = st.choose_removal(scores, "ffn", 0.6, keep="high")
    assert len(low) == round(0.6 * 96)
    assert sum(u.layer == 0 for u in low) == 47  # all of layer 0 but one
    high = st.choose_removal(scores, "ffn", 0.25, keep="low")
    assert all(u.layer == 1 for u in high) and min(u.index for u in high) == 48 - 24
    with pytest.raises(ValueError, match="removal ratio"):
        st.choose_removal(scores, "ffn", 1.0)


def test_structured_artifact_round_trips(tmp_path) -> None:
    model = _bert(3)
    removal = st.choose_removal(st.magnitude_scores(model, st.enumerate_units(model)), "heads", 0.5)
    smaller, structure = st.remove_units(model, removal)
    folder = save_artifact(smaller, tmp_path / "art", structure={"units": structure},
                           method="magnitude-units")  # fmt: skip

    def factory(manifest) -> BertModel:
        skeleton = _bert(99)
        st.apply_structure(skeleton, manifest["structure"]["units"])
        return skeleton

    loaded = load_artifact(folder, factory)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**_inputs()).last_hidden_state,
            smaller(**_inputs()).last_hidden_state,
            atol=0,
            rtol=0,
        )
