"""The embedded VLA's MiniLM without transformers (models/minilm.py) is transformers' MiniLM:
the same parameter names, the same last hidden states bit for bit (fp32 and bf16, padded and
not, fewer layers, heads removed), the same training-mode outputs and gradients for one seed,
and the same token ids as AutoTokenizer. transformers is the reference here only."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, BertModel

from vla_pruned_ros.compression.structured import apply_structure
from vla_pruned_ros.models.embedded_config import minilm_path
from vla_pruned_ros.models.minilm import MiniLM, MiniLMConfig, MiniLMTokenizer, load_minilm
from vla_pruned_ros.sim.instructions import MANIP_TEMPLATES, NAV_TEMPLATES

ODD = ["", "GO TO RED!!!", "Café naïve déjà-vu", "東京 へ 行く", "tab\there\nnewline",
       "a" * 300, "x " * 60, "  spaces   around  ", "[CLS] [SEP] [PAD]", "emoji 🤖 ok",
       "don't stop — keep going…"]  # fmt: skip


def _texts() -> list[str]:
    out = []
    for templates in (NAV_TEMPLATES, MANIP_TEMPLATES):
        for phrasing in templates.values():
            out += [t.format(c=c) for t in phrasing for c in ("red", "blue")]
    return out + ODD


@pytest.fixture(scope="module")
def tokenizers() -> tuple:
    return AutoTokenizer.from_pretrained(minilm_path()), MiniLMTokenizer(minilm_path())


@pytest.mark.parametrize("max_length", [32, 8, 2])
def test_the_tokenizer_gives_autotokenizers_ids(tokenizers, max_length) -> None:
    theirs, ours = tokenizers
    texts = _texts()
    want = theirs(texts, padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt")  # fmt: skip
    got = ours(texts, max_length)
    assert got.keys() == {"input_ids", "attention_mask"}
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["attention_mask"], want["attention_mask"])
    assert got["input_ids"].dtype == got["attention_mask"].dtype == torch.long
    one = ours(["go to the red marker"], max_length)  # a batch of one: no padding
    assert bool(one["attention_mask"].all())


def test_the_tokenizer_refuses_what_it_cannot_do(tokenizers) -> None:
    _, ours = tokenizers
    with pytest.raises(TypeError, match="list of texts"):
        ours("go to red", 32)
    with pytest.raises(ValueError, match="no room"):
        ours(["go to red"], 1)


def _reference(layers: int) -> BertModel:
    from transformers.utils import logging

    logging.set_verbosity_error()  # the checkpoint's unused pooler is expected
    return BertModel.from_pretrained(minilm_path(), num_hidden_layers=layers,
                                     add_pooling_layer=False).eval()  # fmt: skip


@pytest.mark.parametrize("layers", [6, 2])
def test_the_encoder_is_transformers_bert_bit_for_bit(tokenizers, layers) -> None:
    theirs = _reference(layers)
    ours = load_minilm(minilm_path(), layers)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    assert not ours.training and len(ours.encoder.layer) == layers
    batches = [tokenizers[1](_texts(), 32), tokenizers[1](["go to the red marker"], 32)]
    assert not bool(batches[0]["attention_mask"].all())  # one padded, one not
    for dtype in (torch.float32, torch.bfloat16):
        theirs, ours = theirs.to(dtype), ours.to(dtype)
        with torch.inference_mode():
            for enc in batches:
                want = theirs(**enc).last_hidden_state
                got = ours(enc["input_ids"], enc["attention_mask"])
                assert got.dtype == dtype and torch.equal(got, want)


def test_removed_heads_and_channels_compute_as_in_transformers(tokenizers) -> None:
    theirs, ours = _reference(2), load_minilm(minilm_path(), 2)
    structure = {"ffn": {"0": list(range(0, 1536, 3))},
                 "heads": {"0": [0, 5, 11], "1": [3]}}  # fmt: skip
    apply_structure(theirs, structure)
    apply_structure(ours, structure)
    assert ours.encoder.layer[1].attention.self.query.out_features == 32
    enc = tokenizers[1](_texts()[:9], 32)
    with torch.inference_mode():
        assert torch.equal(ours(enc["input_ids"], enc["attention_mask"]),
                           theirs(**enc).last_hidden_state)  # fmt: skip


def test_training_mode_drops_out_and_trains_as_transformers_does(tokenizers) -> None:
    theirs, ours = _reference(2).train(), load_minilm(minilm_path(), 2).train()
    enc = tokenizers[1](_texts()[:6], 32)
    outputs, grads = [], []
    for model, run in ((theirs, lambda: theirs(**enc).last_hidden_state),
                       (ours, lambda: ours(enc["input_ids"], enc["attention_mask"]))):  # fmt: skip
        torch.manual_seed(7)
        out = run()
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append({k: p.grad for k, p in model.named_parameters()})
    torch.manual_seed(8)
    other = ours(enc["input_ids"], enc["attention_mask"]).detach()
    assert not torch.equal(other, outputs[1])  # dropout is on
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for k, g in grads[1].items():
        assert torch.allclose(g, grads[0][k], atol=1e-6, rtol=1e-4), k


def test_an_unsupported_or_foreign_checkpoint_is_refused(tmp_path) -> None:
    config = json.loads((minilm_path() / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="hidden_act 'relu' is not implemented"):
        MiniLMConfig.from_file(tmp_path / "config.json")
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"decoder.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="not a BERT encoder checkpoint"):
        load_minilm(tmp_path)
    assert isinstance(MiniLM(MiniLMConfig.from_file(tmp_path / "config.json")), torch.nn.Module)


def test_loading_leaves_torchs_rng_as_it_was() -> None:
    """As transformers' loader does: a seeded caller (vla-train) builds the same heads after."""
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    load_minilm(minilm_path(), 1)
    assert torch.equal(torch.rand(3), want)
