"""Tiny random-weight checkpoint folders built in code, for tests that need a user's own model on
disk (no hub, no downloads).

`write_openvla_contract_fixture` writes an **OpenVLA-contract fixture**: it is *not* OpenVLA,
but a small remote-code model that keeps the parts of OpenVLA's Hugging Face contract a
deployment relies on, so the `openvla` adapter is exercised against the same surface:

- `config.json` `auto_map` names `AutoConfig` and `AutoModelForVision2Seq` and no `AutoModel`
  (as openvla/openvla-7b's does), with `norm_stats` (per dataset: `action` q01/q99/mask),
  `n_action_bins` 256 and a text vocabulary padded by `pad_to_multiple_of`;
- `configuration_*.py`, `modeling_*.py`, `processing_*.py` written into the folder;
- `predict_action(input_ids, unnorm_key=None, **kwargs)`: appends the empty token when the prompt
  does not end in it, greedily decodes one token per action dimension, maps token ids to bins
  (`vocab_size - id - 1`, clipped), bins to bin centres of `linspace(-1, 1, n_action_bins)`, and
  un-normalises with `0.5 * (x + 1) * (q99 - q01) + q01` where `mask` is true (OpenVLA's rule;
  unmasked dimensions, the gripper, stay normalised). `unnorm_key=None` is allowed only when
  there is a single dataset;
- a processor built offline (a word-level tokenizer and a PIL image processor saved to the
  folder) called as `processor(prompt, image)`, returning input_ids, attention_mask and
  pixel_values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

OPENVLA_FIXTURE_ACTIONS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
OPENVLA_FIXTURE_IMAGE = 16  # square input side of the fixture's image processor

_CONFIGURATION = '''"""Configuration of the OpenVLA-contract test fixture (not OpenVLA)."""

from transformers import PretrainedConfig


class TinyOpenVLAConfig(PretrainedConfig):
    model_type = "tiny_openvla"

    def __init__(self, vocab_size=384, pad_to_multiple_of=64, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vision_hidden_size=24, image_size=16, patch_size=8, n_action_bins=256,
                 empty_token_id=3, norm_stats=None, **kwargs):
        self.vocab_size = vocab_size
        self.pad_to_multiple_of = pad_to_multiple_of
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.vision_hidden_size = vision_hidden_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.n_action_bins = n_action_bins
        self.empty_token_id = empty_token_id
        self.norm_stats = norm_stats or {}
        super().__init__(**kwargs)
'''

_MODELING = '''"""Model of the OpenVLA-contract test fixture (not OpenVLA): a patch vision
backbone, a projector and a small causal language model whose last 256 text tokens are action bins;
`predict_action` follows OpenVLA's decoding and un-normalisation rule."""

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_tiny_openvla import TinyOpenVLAConfig


class TinyBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_attention_heads
        self.input_layernorm = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)
        self.post_attention_layernorm = nn.LayerNorm(d)
        self.up_proj = nn.Linear(d, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.input_layernorm(x)
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        att = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5) + mask
        out = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o_proj(out)
        return x + self.down_proj(torch.nn.functional.gelu(self.up_proj(
            self.post_attention_layernorm(x))))


class TinyLanguageModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(TinyBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class TinyOpenVLAForActionPrediction(PreTrainedModel):
    config_class = TinyOpenVLAConfig
    main_input_name = "input_ids"

    def __init__(self, config):
        super().__init__(config)
        patch = 3 * config.patch_size**2
        self.vision_backbone = nn.Linear(patch, config.vision_hidden_size)
        self.projector = nn.Sequential(nn.Linear(config.vision_hidden_size, config.hidden_size),
                                       nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size))
        self.language_model = TinyLanguageModel(config)
        self.norm_stats = config.norm_stats
        self.bins = np.linspace(-1, 1, config.n_action_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.vocab_size = config.vocab_size - config.pad_to_multiple_of
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.2)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.normal_(module.bias, std=0.05)

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, **kwargs):
        p = self.config.patch_size
        b = pixel_values.shape[0]
        patches = pixel_values.unfold(2, p, p).unfold(3, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * p * p)
        image = self.projector(self.vision_backbone(patches.to(self.vision_backbone.weight.dtype)))
        lm = self.language_model
        x = torch.cat([image, lm.embed_tokens(input_ids)], dim=1)
        t = x.shape[1]
        mask = torch.full((t, t), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        for layer in lm.layers:
            x = layer(x, mask)
        return CausalLMOutput(logits=lm.lm_head(lm.norm(x))[:, image.shape[1]:])

    @staticmethod
    def _check_unnorm_key(norm_stats, unnorm_key):
        if unnorm_key is None:
            assert len(norm_stats) == 1, (
                "Your model was trained on more than one dataset, please pass a `unnorm_key` "
                f"from the following options: {list(norm_stats)}")
            unnorm_key = next(iter(norm_stats.keys()))
        assert unnorm_key in norm_stats, (
            f"The `unnorm_key` you chose is not in the set of available dataset statistics, "
            f"please choose from: {list(norm_stats)}")
        return unnorm_key

    def get_action_dim(self, unnorm_key=None):
        unnorm_key = self._check_unnorm_key(self.norm_stats, unnorm_key)
        return len(self.norm_stats[unnorm_key]["action"]["q01"])

    def get_action_stats(self, unnorm_key=None):
        unnorm_key = self._check_unnorm_key(self.norm_stats, unnorm_key)
        return self.norm_stats[unnorm_key]["action"]

    @torch.no_grad()
    def predict_action(self, input_ids=None, unnorm_key=None, pixel_values=None,
                       attention_mask=None, do_sample=False, **kwargs):
        if do_sample:
            raise ValueError("the fixture decodes greedily only")
        empty = self.config.empty_token_id
        if not torch.all(input_ids[:, -1] == empty):
            input_ids = torch.cat([input_ids, torch.full_like(input_ids[:, :1], empty)], dim=1)
        n = self.get_action_dim(unnorm_key)
        ids = input_ids
        for _ in range(n):
            logits = self(input_ids=ids, pixel_values=pixel_values).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        tokens = ids[0, -n:].cpu().numpy()
        discretized = np.clip(self.vocab_size - tokens - 1, 0, self.bin_centers.shape[0] - 1)
        normalized = self.bin_centers[discretized]
        stats = self.get_action_stats(unnorm_key)
        mask = np.asarray(stats.get("mask", np.ones_like(stats["q01"], dtype=bool)))
        high, low = np.asarray(stats["q99"]), np.asarray(stats["q01"])
        return np.where(mask, 0.5 * (normalized + 1) * (high - low) + low, normalized)
'''

_PROCESSING = '''"""Processor of the OpenVLA-contract test fixture (not OpenVLA), called as
processor(prompt, image)."""

from transformers import BatchFeature, ProcessorMixin


class TinyOpenVLAProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, text=None, images=None, return_tensors="pt", **kwargs):
        pixels = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        text_inputs = self.tokenizer(text, return_tensors=return_tensors)
        return BatchFeature(data={**text_inputs, "pixel_values": pixels})
'''

_WORDS = ("in out what action should the robot take to go pick up place put move turn left "
          "right forward back stop the a red green blue block cup plate table door on into "
          "of and drawer open close push").split()  # fmt: skip


def openvla_norm_stats(keys: tuple[str, ...] = ("bridge_orig",)) -> dict[str, Any]:
    """OpenVLA-layout action statistics per dataset; the gripper (last) is unmasked."""
    stats = {}
    for i, key in enumerate(keys):
        q01 = [-0.02 * (i + 1)] * 6 + [0.0]
        q99 = [0.03 * (i + 1)] * 6 + [1.0]
        stats[key] = {"action": {"mean": [0.0] * 7, "std": [0.01] * 7, "min": q01, "max": q99,
                                 "q01": q01, "q99": q99, "mask": [True] * 6 + [False]},
                      "num_transitions": 100, "num_trajectories": 10}  # fmt: skip
    return stats


def _tokenizer(n_action_bins: int = 256):
    """A word-level tokenizer: specials, the prompt's words and punctuation, then one token per
    action bin, so the vocabulary's last `n_action_bins` ids are the action tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "<unk>", "<s>", "\u2581", ":", "?", ".", ","] + list(dict.fromkeys(_WORDS))
    base = 64
    vocab += [f"<filler_{i}>" for i in range(base - len(vocab))]
    vocab += [f"<action_{i}>" for i in range(n_action_bins)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>"), len(vocab)  # fmt: skip


def write_openvla_contract_fixture(
    folder: Path, norm_keys: tuple[str, ...] = ("bridge_orig",), seed: int = 0
) -> Path:
    """Write the OpenVLA-contract fixture (see the module docstring) into `folder`."""
    import torch
    from safetensors.torch import save_file
    from transformers import SiglipImageProcessorPil
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny_openvla.py").write_text(_CONFIGURATION)
    (folder / "modeling_tiny_openvla.py").write_text(_MODELING)
    (folder / "processing_tiny_openvla.py").write_text(_PROCESSING)
    tokenizer, n_text = _tokenizer()
    pad = 64
    config = {
        "architectures": ["TinyOpenVLAForActionPrediction"],
        "model_type": "tiny_openvla",
        "auto_map": {
            "AutoConfig": "configuration_tiny_openvla.TinyOpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_tiny_openvla.TinyOpenVLAForActionPrediction",
        },
        "vocab_size": n_text + pad, "pad_to_multiple_of": pad, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "vision_hidden_size": 24, "image_size": OPENVLA_FIXTURE_IMAGE, "patch_size": 8,
        "n_action_bins": 256, "empty_token_id": 3, "norm_stats": openvla_norm_stats(norm_keys),
        "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(folder)
    image = SiglipImageProcessorPil(size={"height": OPENVLA_FIXTURE_IMAGE,
                                          "width": OPENVLA_FIXTURE_IMAGE})  # fmt: skip
    image.save_pretrained(folder)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["processor_class"] = "TinyOpenVLAProcessor"
    pre["auto_map"] = {"AutoProcessor": "processing_tiny_openvla.TinyOpenVLAProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    processor = {"processor_class": "TinyOpenVLAProcessor", "auto_map": pre["auto_map"]}
    (folder / "processor_config.json").write_text(json.dumps(processor))
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    cls = get_class_from_dynamic_module(config["auto_map"]["AutoModelForVision2Seq"], folder)
    torch.manual_seed(seed)
    model = cls(cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})  # fmt: skip
    return folder


def load_openvla_contract_dense(folder: Path) -> tuple[Any, Any]:
    """(model, processor) of the fixture as a user would load the dense checkpoint."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    cls = get_class_from_dynamic_module(cfg.auto_map["AutoModelForVision2Seq"], folder)
    model = cls(cfg)
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True,
                                              local_files_only=True)  # fmt: skip
    return model.eval(), processor


def openvla_contract_dense_action(folder: Path, image: np.ndarray, instruction: str,
                                  unnorm_key: str | None = None) -> np.ndarray:  # fmt: skip
    """The dense fixture's `predict_action` on one frame, with OpenVLA's prompt."""
    from PIL import Image

    model, processor = load_openvla_contract_dense(folder)
    prompt = f"In: What action should the robot take to {instruction.strip().lower()}?\nOut:"
    inputs = processor(prompt, Image.fromarray(image))
    return np.asarray(model.predict_action(**inputs, unnorm_key=unnorm_key, do_sample=False))


# --- tiny random checkpoints of the transformers families users bring (compression helper) ---


def _tiny_text(cls: type, **overrides: Any) -> Any:
    """A two-layer language model config small enough to compress in a second."""
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=64)  # fmt: skip
    return cls(**{**base, **overrides})


def tiny_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(_tiny_text(LlamaConfig))


def tiny_llava() -> Any:
    """LLaVA (and Prismatic-style) layout: CLIP vision tower, multi-modal projector, Llama."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=4, image_size=16, patch_size=8,
                              projection_dim=32)  # fmt: skip
    return Llava(LlavaConfig(
        vision_config=vision, text_config=_tiny_text(LlamaConfig), image_token_index=127,
        image_seq_length=4))  # fmt: skip


def tiny_paligemma() -> Any:
    """PaliGemma (pi0's backbone): SigLIP, projector, Gemma with its scaled word embeddings."""
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig
    from transformers import PaliGemmaForConditionalGeneration as PaliGemma

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=4, image_size=16, patch_size=8)  # fmt: skip
    return PaliGemma(PaliGemmaConfig(
        vision_config=vision, text_config=_tiny_text(GemmaConfig, head_dim=8),
        image_token_index=127, projection_dim=32))  # fmt: skip


def tiny_idefics3() -> Any:
    """Idefics3 / SmolVLM (SmolVLA's backbone): vision model, connector, Llama text model."""
    from transformers import Idefics3Config, Idefics3VisionConfig, LlamaConfig
    from transformers import Idefics3ForConditionalGeneration as Idefics3

    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, image_size=16, patch_size=8)  # fmt: skip
    return Idefics3(Idefics3Config(
        vision_config=vision, text_config=_tiny_text(LlamaConfig), image_token_id=127,
        scale_factor=1))  # fmt: skip


def tiny_qwen2_5_vl() -> Any:
    """Qwen2.5-VL: its `visual` tower with the patch merger, and the Qwen2 language model."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                  patch_size=2, spatial_merge_size=1, temporal_patch_size=1,
                  fullatt_block_indexes=[0])  # fmt: skip
    text = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                bos_token_id=1, eos_token_id=2)  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, image_token_id=127, video_token_id=126,
        vision_start_token_id=125))  # fmt: skip


TINY_FAMILIES = {"LLaVA": tiny_llava, "PaliGemma": tiny_paligemma, "Idefics3": tiny_idefics3,
                 "Qwen2.5-VL": tiny_qwen2_5_vl, "Llama": tiny_llama}  # fmt: skip


def write_tiny_family(family: str, folder: Path, seed: int = 0) -> Any:
    """Save a tiny random checkpoint of `family` (a key of TINY_FAMILIES) to `folder` with
    `save_pretrained` (safetensors); returns the dense model in eval mode."""
    import torch

    torch.manual_seed(seed)
    model = TINY_FAMILIES[family]().eval()
    model.save_pretrained(folder)
    return model


# --- a text-action checkpoint: a tiny Llama that answers in numbers (the `text` adapter) ---

TEXT_ACTION_NUMBERS = 100  # the vocabulary's words: "0" .. "99"


def write_text_action_fixture(folder: Path, seed: int = 0) -> Path:
    """A tiny random-weight Llama (`LlamaForCausalLM`, saved with `save_pretrained`) whose
    word-level tokenizer knows only specials and the numbers 0-99, so every answer it
    generates is a run of numbers: a `text` adapter rule such as `^\\s*(\\d+)` always parses it.
    The special tokens' output rows are zeroed so greedy decoding does not stop at once."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = specials + [str(i) for i in range(TEXT_ACTION_NUMBERS)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")  # fmt: skip
    torch.manual_seed(seed)
    config = _tiny_text(LlamaConfig, vocab_size=len(vocab), pad_token_id=0, bos_token_id=2,
                        eos_token_id=3, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[: len(specials)] = 0.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
