"""The activation-aware correction (issue 22): it reproduces the dense layer at full rank, never
does worse than the plain SVD on the calibration inputs' output error, and stays finite on
inputs that never excite a channel."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vla_pruned_ros.compression import gluestick, prune, read_manifest, save_artifact
from vla_pruned_ros.compression.calibration import InputStats
from vla_pruned_ros.compression.gluestick import (
    activation_factors,
    gap_factors,
    input_basis,
    layer_factors,
    output_error,
)
from vla_pruned_ros.compression.patterns import parse_pattern, prune_mask
from vla_pruned_ros.compression.rank_policy import ActivationBudgetRank, parse_rank_policy


def _layer(d_out: int, d_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    return w, torch.where(prune_mask(w.abs(), parse_pattern("2:4")), w, torch.zeros_like(w))


def _inputs(n: int, d_in: int, rank: int, seed: int) -> torch.Tensor:
    """n tokens in a `rank`-dimensional subspace, with anisotropic scales (what layers see)."""
    g = torch.Generator().manual_seed(seed + 1)
    basis = torch.randn(rank, d_in, generator=g, dtype=torch.float64)
    scales = torch.logspace(1, -2, rank, dtype=torch.float64).unsqueeze(1)
    return torch.randn(n, rank, generator=g, dtype=torch.float64) @ (scales * basis)


def _out_err(w: torch.Tensor, corrected: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm((w - corrected) @ x.T))


@pytest.mark.parametrize("x_rank", [16, 5])
def test_full_rank_reproduces_the_dense_output_on_the_calibration_inputs(x_rank) -> None:
    w, p = _layer(12, 16, seed=3)
    x = _inputs(40, 16, x_rank, seed=3)
    f = activation_factors(w, p, rank=12, xtx=x.T @ x)
    assert f.rank == 12 and f.correction == "activation" and f.damping > 0
    corrected = p + f.a @ f.b
    assert torch.allclose(corrected @ x.T, w @ x.T, atol=1e-8 * float(w.abs().max()) * 40)
    assert f.error < 1e-8 * f.gap_norm


@settings(max_examples=40, deadline=None)
@given(
    st.integers(4, 24),
    st.integers(1, 6).map(lambda k: 4 * k),
    st.integers(1, 24),
    st.integers(0, 10_000),
    st.sampled_from([1e-6, 1e-2, 1.0]),
)
def test_output_error_never_exceeds_the_plain_svd_at_any_rank(d_out, d_in, x_rank, seed, damp):
    w, p = _layer(d_out, d_in, seed)
    x = _inputs(3 * d_in, d_in, min(x_rank, d_in), seed)  # x_rank < d_in: rank-deficient X
    xtx = x.T @ x
    basis = input_basis(xtx, damp)
    for r in range(min(d_out, d_in) + 1):
        svd = gap_factors(w, p, r)
        act = activation_factors(w, p, r, xtx, damp, basis=basis)
        assert act.a.shape == svd.a.shape and act.b.shape == svd.b.shape
        e_svd = _out_err(w, p + svd.a @ svd.b, x)
        e_act = _out_err(w, p + act.a @ act.b, x)
        assert e_act <= e_svd * (1 + 1e-7) + 1e-9 * float(torch.linalg.matrix_norm(w @ x.T))


def test_on_anisotropic_inputs_it_beats_the_svd_by_a_margin() -> None:
    """Not only <=: where the inputs excite few directions, rank goes where they point."""
    w, p = _layer(32, 64, seed=7)
    x = _inputs(256, 64, 8, seed=7)
    svd, act = gap_factors(w, p, 4), activation_factors(w, p, 4, x.T @ x)
    assert _out_err(w, p + act.a @ act.b, x) < 0.5 * _out_err(w, p + svd.a @ svd.b, x)


def test_damping_keeps_a_zero_input_channel_and_all_zero_inputs_finite() -> None:
    w, p = _layer(8, 16, seed=1)
    x = torch.randn(64, 16, dtype=torch.float64)
    x[:, 5] = 0.0  # a channel the calibration data never excites: X^T X is singular
    f = activation_factors(w, p, 8, x.T @ x)
    assert torch.isfinite(f.a).all() and torch.isfinite(f.b).all()
    assert float(f.b.abs().max()) < 1e6
    zero = activation_factors(w, p, 3, torch.zeros(16, 16, dtype=torch.float64))
    plain = gap_factors(w, p, 3)
    assert torch.isfinite(zero.b).all() and zero.damping == 1.0
    assert torch.allclose(zero.a @ zero.b, plain.a @ plain.b, atol=1e-8)  # no data: plain SVD


def test_bad_inputs_are_refused_clearly() -> None:
    w, p = _layer(4, 8, seed=0)
    with pytest.raises(ValueError, match="damping must be > 0"):
        input_basis(torch.eye(8), 0.0)
    with pytest.raises(ValueError, match="square"):
        input_basis(torch.ones(8, 4))
    with pytest.raises(ValueError, match="does not fit"):
        activation_factors(w, p, 2, torch.eye(4))
    with pytest.raises(ValueError, match="needs the layer's X"):
        layer_factors(w, p, 2, "activation")
    with pytest.raises(ValueError, match="unknown correction"):
        layer_factors(w, p, 2, "eora")


def _model_and_calib(seed: int = 0) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    mix = torch.randn(4, 16)  # inputs in a 4-dimensional subspace
    return model, [torch.randn(32, 4) @ mix for _ in range(4)]


def test_gluestick_activation_lowers_the_output_error_and_records_it(tmp_path) -> None:
    dense, calib = _model_and_calib()
    pruned = prune(dense, "magnitude", "2:4")
    svd = gluestick(dense, pruned, 2)
    act = gluestick(dense, pruned, 2, correction="activation", calib=calib,
                    calib_source="four random batches")  # fmt: skip
    x = torch.cat(calib)
    with torch.no_grad():
        ref = dense(x)
        e_svd = float(torch.linalg.matrix_norm(svd(x) - ref))
        e_act = float(torch.linalg.matrix_norm(act(x) - ref))
    assert e_act < e_svd
    assert act.correction["correction"] == "activation"
    assert act.correction["calibration"] == "four random batches"
    assert act.correction["calibration_tokens"] == 128
    assert act.get_submodule("0").spectrum["correction"] == "activation"
    assert svd.correction == {"correction": "svd"}
    manifest = read_manifest(save_artifact(act, tmp_path / "a"))
    assert manifest["extra"]["correction"]["correction"] == "activation"
    assert manifest["extra"]["correction"]["damp"] == pytest.approx(0.01)
    assert manifest["layers"]["0"]["spectrum"]["damping"] > 0
    with pytest.raises(ValueError, match="needs calibration data"):
        gluestick(dense, pruned, 2, correction="activation")


def test_the_activation_budget_policy_spends_the_budget_where_outputs_feel_it() -> None:
    dense, calib = _model_and_calib(1)
    pruned = prune(dense, "magnitude", "2:4")
    budget = 8 * (32 + 16) * 4 / 1e6  # eight fp32 triplets of the first layer
    model = gluestick(dense, pruned, f"activation-budget:{budget:g}", correction="activation",
                      calib=calib)  # fmt: skip
    spent = sum(
        m.rank * (m.in_features + m.out_features) * 4
        for m in (model.get_submodule("0"), model.get_submodule("2"))
    )
    assert 0 < spent <= budget * 1e6
    # the first layer sees inputs in a 4-dimensional subspace: more than 4 ranks buy nothing
    assert model.get_submodule("0").rank <= 4
    assert isinstance(parse_rank_policy("activation-budget:2MB"), ActivationBudgetRank)
    with pytest.raises(ValueError, match="use correction='activation'"):
        gluestick(dense, pruned, "activation-budget:1")


def test_output_error_from_xtx_matches_the_tokens() -> None:
    w, p = _layer(6, 8, seed=2)
    x = torch.randn(20, 8, dtype=torch.float64)
    s = InputStats(8, with_hessian=True)
    s.add(x)
    err, ref = output_error(w, p, s.xtx)
    assert err == pytest.approx(_out_err(w, p, x))
    assert ref == pytest.approx(float(torch.linalg.matrix_norm(w @ x.T)))


def _llama(folder, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=32, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder, max_shard_size="60KB")
    return model


def _ids(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 96, (1, 12), generator=g) for _ in range(4)]


def test_block_by_block_activation_beats_svd_on_the_checkpoint_and_records_it(tmp_path) -> None:
    """Each block's factors fit the inputs from the compressed blocks before it: the logits on
    the calibration ids end closer to the dense model's than with the plain SVD."""
    from vla_pruned_ros.models.hf_checkpoint import load_checkpoint_artifact
    from vla_pruned_ros.models.hf_sequential import sequential_compress

    dense = _llama(tmp_path / "m")
    errors = {}
    for correction in ("svd", "activation"):
        out = sequential_compress(tmp_path / "m", tmp_path / correction, "magnitude", "2:4", 4,
                                  _ids(), svd="exact", factor_dtype="float32",
                                  weight_dtype=None, progress=False, correction=correction,
                                  calib_source="four random id rows")  # fmt: skip
        manifest = read_manifest(out)
        assert manifest["extra"]["correction"]["correction"] == correction
        loaded = load_checkpoint_artifact(out)
        with torch.no_grad():
            errors[correction] = sum(
                float(torch.linalg.matrix_norm(loaded(i).logits[0] - dense(i).logits[0]))
                for i in _ids()
            )
    record = manifest["extra"]["correction"]
    assert record["calibration"] == "four random id rows" and record["calibration_tokens"] == 48
    assert manifest["layers"]["model.layers.1.mlp.down_proj"]["spectrum"]["correction"] == (
        "activation"
    )
    assert errors["activation"] < errors["svd"]


def test_vla_prune_correction_activation_on_a_checkpoint(tmp_path, capsys) -> None:
    """Magnitude + --correction activation on a checkpoint goes block by block on the texts
    (through the checkpoint's own tokenizer) and says so in the manifest; without
    calibration it is refused with a message naming what is missing."""
    import shutil

    from transformers import BertConfig, BertModel

    from vla_pruned_ros.cli.prune import main
    from vla_pruned_ros.models.embedded import minilm_path

    torch.manual_seed(2)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).eval().save_pretrained(tmp_path / "bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):  # fmt: skip
        if (minilm_path() / name).is_file():
            shutil.copy(minilm_path() / name, tmp_path / "bert" / name)
    texts = tmp_path / "calib.txt"
    texts.write_text("go to the red marker\npush the green block onto the target\n")
    base = ["--model", str(tmp_path / "bert"), "--pattern", "2:4", "--rank", "4",
            "--correction", "activation"]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "x")]) == 2
    assert "--correction activation on a checkpoint needs calibration" in capsys.readouterr().err
    assert main([*base, "--calib-texts", str(texts), "--correction-damp", "0.05",
                 "-o", str(tmp_path / "art")]) == 0  # fmt: skip
    manifest = read_manifest(tmp_path / "art")
    record = manifest["extra"]["correction"]
    assert manifest["method"] == "magnitude" and record["correction"] == "activation"
    assert record["damp"] == pytest.approx(0.05) and str(texts.resolve()) in record["calibration"]
    assert all(e["spectrum"]["correction"] == "activation" for e in manifest["layers"].values())
