"""Wanda / SparseGPT block by block from a checkpoint folder (tiny Llama built in code)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vla_pruned_ros.compression import prune, read_manifest
from vla_pruned_ros.models.hf_checkpoint import load_checkpoint_artifact
from vla_pruned_ros.models.hf_sequential import sequential_compress


def _llama(folder: Path, layers: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=32, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder, max_shard_size="60KB")
    return model


def _calib() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 96, (1, 12), generator=g) for _ in range(4)]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_one_block_matches_the_in_memory_method(tmp_path, method) -> None:
    dense = _llama(tmp_path / "m", layers=1)
    out = sequential_compress(tmp_path / "m", tmp_path / "art", method, "2:4", 0, _calib(),
                              weight_dtype=None, progress=False)  # fmt: skip
    manifest = read_manifest(out)
    assert manifest["method"] == method and len(manifest["layers"]) == 7
    loaded = load_checkpoint_artifact(out, mode="materialize")  # dense weights to compare
    reference = prune(dense, method, "2:4", calib=[(ids,) for ids in _calib()],
                      exclude=["lm_head"])  # fmt: skip
    for name in manifest["layers"]:
        got = loaded.get_submodule(name).weight
        want = reference.get_submodule(name).weight
        if method == "wanda":  # same statistics, same scores: the same weights
            assert torch.equal(got, want), name
        else:  # SparseGPT updates weights in float64 either way; masks agree
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            assert torch.equal(got != 0, want != 0), name


def test_later_blocks_see_the_pruned_outputs_and_gluestick_applies(tmp_path) -> None:
    dense = _llama(tmp_path / "m", layers=2)
    out = sequential_compress(tmp_path / "m", tmp_path / "art", "wanda", "2:4", 64, _calib(),
                              svd="exact", factor_dtype="float32", weight_dtype=None,
                              progress=False)  # fmt: skip
    oneshot = prune(dense, "wanda", "2:4", calib=[(ids,) for ids in _calib()],
                    exclude=["lm_head"])  # fmt: skip
    loaded = load_checkpoint_artifact(out, mode="materialize")
    first = "model.layers.0.mlp.down_proj"
    second = "model.layers.1.mlp.down_proj"
    assert torch.equal(loaded.get_submodule(first).weight, oneshot.get_submodule(first).weight)
    assert not torch.equal(loaded.get_submodule(second).weight,
                           oneshot.get_submodule(second).weight)  # fmt: skip
    ids = _calib()[0]
    with torch.no_grad():  # full rank (64) restores the dense model
        torch.testing.assert_close(loaded(ids).logits, dense(ids).logits, atol=1e-4, rtol=1e-4)


def test_vla_prune_runs_wanda_on_a_checkpoint_with_its_tokenizer(tmp_path) -> None:
    import shutil
    import subprocess
    import sys

    from transformers import BertConfig, BertModel

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
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model", str(tmp_path / "bert"),
         "--method", "wanda", "--pattern", "2:4", "--rank", "4", "--calib-texts", str(texts),
         "-o", str(tmp_path / "art")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(tmp_path / "art")
    assert manifest["method"] == "wanda" and manifest["extra"]["calibration"]["samples"] == 2
    model = load_checkpoint_artifact(tmp_path / "art")
    ids = torch.tensor([[101, 2175, 2000, 102]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).last_hidden_state).all()


def _tiny_llava(folder: Path):
    """A LLaVA-shaped VLM (CLIP vision tower, projector, Llama language model) with its
    processor, built from configs in code: the shape of a VLA checkpoint on a user's disk."""
    from transformers import (
        BertTokenizerFast,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from vla_pruned_ros.models.embedded import minilm_path

    torch.manual_seed(3)
    tok = BertTokenizerFast.from_pretrained(minilm_path())
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=128)  # fmt: skip
    cfg = LlavaConfig(vision_config=vision, text_config=text,
                      image_token_index=tok.convert_tokens_to_ids("<image>"))  # fmt: skip
    model = LlavaForConditionalGeneration(cfg).eval()
    model.save_pretrained(folder)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                      crop_size={"height": 32, "width": 32}),
                   tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                   image_token="<image>",
                   num_additional_image_tokens=1).save_pretrained(folder)  # fmt: skip
    return model


def _images(folder: Path, seed: int, n: int = 3) -> Path:
    import cv2
    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):  # odd sizes: the checkpoint's processor resizes them, not us
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (40 + i, 56, 3), np.uint8))
    (folder / "instructions.txt").write_text("push the red block onto the target\n")
    return folder


def test_vla_prune_calibrates_a_vlm_checkpoint_on_images_through_its_processor(tmp_path):
    import subprocess
    import sys

    from vla_pruned_ros.models.hf_sequential import block_list, calibration_inputs
    from vla_pruned_ros.training.calibration_data import frames_from_folder

    dense = _tiny_llava(tmp_path / "vlm")
    photos = _images(tmp_path / "photos", seed=0)
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model", str(tmp_path / "vlm"),
         "--method", "wanda", "--pattern", "2:4", "--rank", "4", "--calib-folder", str(photos),
         "--calib-prompt", "USER: {instruction} ASSISTANT:", "-o", str(tmp_path / "art")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(tmp_path / "art")
    calibration = manifest["extra"]["calibration"]
    assert calibration["samples"] == 3 and "pixel_values" in calibration["inputs"]
    layers = list(manifest["layers"])
    # the language backbone's blocks, not the vision tower's (which also has a `layers` list)
    assert len(layers) == 14 and all(".language_model.layers." in n for n in layers)
    assert block_list(dense, layers)[0].endswith("language_model.layers")

    # the first block's masks are Wanda's on the image-conditioned activations, exactly as the
    # in-memory method computes them from the same processor inputs
    images, texts = frames_from_folder(photos, size=None)
    inputs = calibration_inputs(tmp_path / "vlm", images, texts, "USER: {instruction} ASSISTANT:")
    reference = prune(dense, "wanda", "2:4", calib=inputs, include=["*language_model.layers.0.*"])
    loaded = load_checkpoint_artifact(tmp_path / "art", mode="materialize")
    name = "model.language_model.layers.0.mlp.down_proj"
    got = loaded.get_submodule(name).weight
    assert torch.equal(got != 0, reference.get_submodule(name).weight != 0)

    other = _images(tmp_path / "other", seed=1)  # other pictures: other statistics, other masks
    frames, words = frames_from_folder(other, size=None)
    changed = prune(dense, "wanda", "2:4", include=["*language_model.layers.0.*"],
                    calib=calibration_inputs(tmp_path / "vlm", frames, words,
                                             "USER: {instruction} ASSISTANT:"))  # fmt: skip
    assert not torch.equal(got != 0, changed.get_submodule(name).weight != 0)

    # magnitude streams the same legacy-layout checkpoint (keys renamed as transformers does)
    streamed = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model", str(tmp_path / "vlm"),
         "--pattern", "2:4", "--rank", "64", "--svd", "exact", "--factor-dtype", "float32",
         "-o", str(tmp_path / "mag")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    assert set(read_manifest(tmp_path / "mag")["layers"]) == set(layers)
    with torch.no_grad():  # full rank: the dense VLM's logits, image tokens included
        want = dense(**inputs[0]).logits
        got_logits = load_checkpoint_artifact(tmp_path / "mag")(**inputs[0]).logits
    assert (got_logits - want).abs().max() < 5e-2
