"""`prune()` on a generic module keeps an output head named like `lm_head` dense unless an
include glob names it (the pruning papers' authors never prune it), and pruning it is worse."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vla_pruned_ros.compression import GluestickLinear, prune, select_linear


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=False)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _kl(dense, model, ids) -> float:
    with torch.no_grad():
        p = torch.log_softmax(dense(ids).logits, -1)
        q = torch.log_softmax(model(ids).logits, -1)
    return float(torch.sum(p.exp() * (p - q), -1).mean())


def test_lm_head_is_kept_dense_unless_included() -> None:
    dense = _llama()
    assert "lm_head" not in select_linear(dense)
    assert "model.layers.0.mlp.up_proj" in select_linear(dense)
    assert "lm_head" in select_linear(dense, include=["*"])
    default = prune(dense, "magnitude", "2:4")
    assert not isinstance(default.lm_head, GluestickLinear)
    assert isinstance(default.model.layers[0].mlp.up_proj, GluestickLinear)
    everything = prune(dense, "magnitude", "2:4", include=["*"])
    assert isinstance(everything.lm_head, GluestickLinear)
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))
    kl_default, kl_all = _kl(dense, default, ids), _kl(dense, everything, ids)
    print(f"KL to dense: default {kl_default:.4g}, lm_head pruned too {kl_all:.4g}")
    assert kl_all > kl_default
