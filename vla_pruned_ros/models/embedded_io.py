"""The embedded VLA on disk: the shipped weights folder, save and load (fp16 safetensors without
the frozen word-embedding table, plus config.json), and MiniLM's tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vla_pruned_ros.models.embedded_config import FROZEN_KEYS, EmbeddedVLAConfig, minilm_path
from vla_pruned_ros.models.embedded_net import EmbeddedVLA
from vla_pruned_ros.models.minilm import MiniLMTokenizer
from vla_pruned_ros.paths import atomic_path, atomic_write


def load_tokenizer() -> MiniLMTokenizer:
    """MiniLM's own tokenizer, from the offline package (the model reads no other):
    `tokenizer(texts, max_length)` -> int64 input_ids and attention_mask, padded."""
    return MiniLMTokenizer(minilm_path())


DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "embedded_vla"


def save_embedded(model: EmbeddedVLA, folder: Path) -> Path:
    """Ship the trained model: fp16 safetensors without the frozen word-embedding table (it is
    loaded from the MiniLM package), plus config.json. Returns the weights file."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in model.state_dict().items()
        if k not in FROZEN_KEYS and not k.startswith("state_heads.")  # training-only readouts
    }
    path = folder / "model.safetensors"
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "vla_pruned_ros.embedded_vla/1"})
    shipped = dataclasses.replace(model.config, state_dims={})
    atomic_write(folder / "config.json", shipped.to_json())
    return path


def weights_identity(folder: Path | None = None) -> str:
    """sha256 over a saved model's weights and config.json: what names this model's text
    encoder in the instruction-feature cache (any change to either file changes it)."""
    import hashlib

    folder = Path(folder) if folder is not None else DEFAULT_WEIGHTS
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        with open(folder / name, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def load_embedded_vision(
    folder: Path | None = None, dtype: torch.dtype = torch.float32
) -> tuple[EmbeddedVLA, int]:
    """The saved model's vision stem and heads without its text encoder
    (`EmbeddedVLA.without_text`: no MiniLM weights), with the same weights as
    `load_embedded` gives them, and the bytes the full model's state would hold (its
    PolicyInfo.memory_bytes, so a report is the same whichever way the model was loaded)."""
    from safetensors.torch import load_file

    from vla_pruned_ros.models.embedded_config import minilm_path

    folder = Path(folder) if folder is not None else DEFAULT_WEIGHTS
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"no embedded VLA weights at {weights}")
    config = EmbeddedVLAConfig.from_json((folder / "config.json").read_text())
    model = EmbeddedVLA.without_text(config)
    tensors = load_file(str(weights))
    vision = {k: v.to(dtype) for k, v in tensors.items() if not k.startswith("text.")}
    missing, unexpected = model.load_state_dict(vision, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the embedded VLA's vision part: missing "
                         f"{sorted(missing)}, unexpected {sorted(unexpected)}")  # fmt: skip
    import json

    minilm = json.loads((minilm_path() / "config.json").read_text())
    frozen = minilm["vocab_size"] * minilm["hidden_size"]  # FROZEN_KEYS: the word embeddings
    size = torch.empty((), dtype=dtype).element_size()
    memory = size * (sum(t.numel() for t in tensors.values()) + frozen)
    return model.to(dtype).eval(), memory


def load_embedded(folder: Path | None = None, dtype: torch.dtype = torch.float32) -> EmbeddedVLA:
    """The shipped embedded VLA (or one saved by `save_embedded`), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else DEFAULT_WEIGHTS
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"no embedded VLA weights at {weights}; train them with `vla-train` "
            "(see MODEL_CARD.md) or pass the folder of a saved model"
        )
    config = EmbeddedVLAConfig.from_json((folder / "config.json").read_text())
    model = EmbeddedVLA.from_minilm(config)
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in load_file(str(weights)).items()}, strict=False
    )
    if unexpected or set(missing) - set(FROZEN_KEYS):
        raise ValueError(
            f"{weights} does not match the embedded VLA: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.to(dtype).eval()
