"""User checkpoints from local Hugging Face folders (tiny Llama-style and BERT models built from
configs in code): streamed through pruning + GLUESTICK by vla-prune, reloaded by path."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from vla_pruned_ros.compression import read_manifest
from vla_pruned_ros.compression.artifact import _canonical
from vla_pruned_ros.models.hf_checkpoint import (
    CheckpointError,
    checkpoint_files,
    linear_layers,
    load_checkpoint_artifact,
    select,
)


def _llama(folder: Path) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder, max_shard_size="60KB")  # several shards + index
    return model


def _bert(folder: Path) -> BertModel:
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16)  # fmt: skip
    model = BertModel(cfg).eval()
    model.save_pretrained(folder)
    return model


def _prune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.prune", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_llama_streams_to_a_sharded_artifact_and_full_rank_gives_the_dense_model(tmp_path):
    dense = _llama(tmp_path / "llama")
    assert len(checkpoint_files(tmp_path / "llama")) > 1
    out = tmp_path / "art"
    done = _prune("--model", str(tmp_path / "llama"), "--pattern", "2:4", "--rank", "64",
                  "--svd", "exact", "--factor-dtype", "float32", "--shard-mb", "0.05",
                  "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(out)
    layers = manifest["layers"]
    # the paper's default: the language backbone, not the embeddings or the head
    assert "model.layers.0.self_attn.q_proj" in layers and "lm_head" not in layers
    assert len(layers) == 2 * 7
    assert sum(name.startswith("pruned-") for name in manifest["files"]) > 1  # sharded
    shown = subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.inspect_artifact", str(out),
                            "--plot", str(tmp_path / "spectra.png")],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "model.layers.1.mlp.down_proj" in shown.stdout and (tmp_path / "spectra.png").exists()
    model = load_checkpoint_artifact(out)
    ids = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 40]])
    with torch.no_grad():
        want = dense(ids).logits
        got = model(ids).logits
    # full rank (64 = min dims of every layer) restores the dense weights up to fp16 storage
    assert (got - want).abs().max() < 5e-2
    zero = tmp_path / "r0"
    assert _prune("--model", str(tmp_path / "llama"), "--pattern", "2:4", "-o",
                  str(zero)).returncode == 0  # fmt: skip
    with torch.no_grad():
        pruned = load_checkpoint_artifact(zero, mode="packed")(ids).logits
    assert (pruned - want).abs().max() > (got - want).abs().max()


def test_artifact_loads_onto_a_meta_skeleton_in_the_compute_dtype(tmp_path):
    """No dense skeleton is allocated: every tensor comes from the artifact or is rebuilt from
    the config (rotary tables), tied weights stay one tensor, and the dtype asked for is used."""
    dense = _llama(tmp_path / "llama")
    out = tmp_path / "art"
    assert _prune("--model", str(tmp_path / "llama"), "--pattern", "2:4", "--rank", "8",
                  "-o", str(out)).returncode == 0  # fmt: skip
    model = load_checkpoint_artifact(out, mode="materialize", dtype=torch.bfloat16)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.bfloat16 for t in floats)
    torch.testing.assert_close(model.model.rotary_emb.inv_freq.float(),
                               dense.model.rotary_emb.inv_freq, rtol=1e-2, atol=0)  # fmt: skip
    ids = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 40]])
    reference = load_checkpoint_artifact(out, mode="materialize")  # float32
    with torch.no_grad():
        low, full = model(ids).logits.float(), reference(ids).logits
    assert (low - full).abs().max() < 0.1 * full.abs().max()

    # a manifest that says the architecture's code ships with the checkpoint does not make the
    # loader run it: that takes the loader's own opt-in
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["extra"]["trust_remote_code"] = True  # as an artifact of such a checkpoint says
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="pass trust_remote_code=True"):
        load_checkpoint_artifact(out)


def test_bert_and_clear_errors(tmp_path):
    dense = _bert(tmp_path / "bert")
    assert "encoder.layer.0.attention.self.query" in select(
        linear_layers(tmp_path / "bert"), None, None
    )
    out = tmp_path / "bert_art"
    done = _prune("--model", str(tmp_path / "bert"), "--pattern", "unstructured:0.5", "--rank",
                  "8", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    model = load_checkpoint_artifact(out)
    ids = torch.tensor([[2, 7, 9, 4]])
    with torch.no_grad():
        assert model(ids).last_hidden_state.shape == dense(ids).last_hidden_state.shape
    assert read_manifest(out)["sparsity"] == pytest.approx(0.5, abs=1e-3)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text('{"model_type": "bert"}')
    bad = _prune("--model", str(empty), "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and "has no weights" in bad.stderr
    with pytest.raises(CheckpointError, match="match none of the"):
        select(linear_layers(tmp_path / "bert"), ["nothing.*"], None)
    wanda = _prune("--model", str(tmp_path / "bert"), "--method", "wanda", "-o",
                   str(tmp_path / "y"))  # fmt: skip
    assert wanda.returncode == 2 and "calibration" in wanda.stderr
    odd = _prune(
        "--model",
        str(tmp_path / "bert"),
        "--pattern",
        "4:8",
        "--include",
        "*intermediate*",
        "*output.dense",
        "--exclude",
        "-o",
        str(tmp_path / "z"),
    )
    assert odd.returncode == 0, odd.stderr  # 32 and 64 wide: multiples of 8
