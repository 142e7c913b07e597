"""The embedded VLA through the compression core: calibration batches, artifact save and load.

The frozen MiniLM word-embedding table is not stored in artifacts (like the shipped model, it
comes from the offline MiniLM package), so an artifact holds only what compression changed and
what training adapted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_pruned_ros.compression import load_artifact, memory_report, save_artifact
from vla_pruned_ros.compression.artifact import sha256_file
from vla_pruned_ros.models.embedded import (
    DEFAULT_WEIGHTS,
    FROZEN_KEYS,
    EmbeddedVLA,
    EmbeddedVLAConfig,
    load_tokenizer,
)

SOURCE_ID = "embedded_vla"


def calibration_batches(
    model: EmbeddedVLA,
    frames: dict[str, tuple[np.ndarray, Sequence[str]]],
    batch_size: int = 16,
) -> Iterator[dict[str, Any]]:
    """Forward-call keyword batches from {task: (uint8 N x H x W x 3 frames, N instructions)}.
    Every task's head runs, so every selected layer sees calibration data."""
    tokenizer = load_tokenizer()
    for task, (images, instructions) in frames.items():
        for start in range(0, len(images), batch_size):
            texts = list(instructions[start : start + batch_size])
            distinct = sorted(set(texts))
            enc = tokenizer(
                distinct,
                padding=True,
                truncation=True,
                max_length=model.config.max_text_tokens,
                return_tensors="pt",
            )
            yield {
                "images": torch.from_numpy(
                    np.ascontiguousarray(images[start : start + batch_size])
                ),
                "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"],
                "text_index": torch.tensor([distinct.index(t) for t in texts]),
                "task": task,
            }


def save_embedded_artifact(
    model: EmbeddedVLA,
    path: Path,
    source: Path = DEFAULT_WEIGHTS,
    overwrite: bool = False,
    **fields: Any,
) -> Path:
    """An artifact of a compressed embedded VLA, fp16 like the shipped model."""
    weights = Path(source) / "model.safetensors"
    return save_artifact(
        model,
        path,
        weight_dtype="float16",
        skip_keys=FROZEN_KEYS,
        overwrite=overwrite,
        source_model=SOURCE_ID,
        source_sha256=sha256_file(weights) if weights.is_file() else None,
        model_config=json.loads(model.config.to_json()),
        **fields,
    )


def embedded_factory(manifest: dict[str, Any]) -> EmbeddedVLA:
    """The dense skeleton an artifact's tensors go into (with MiniLM's word embeddings)."""
    config = manifest.get("extra", {}).get("model_config")
    if manifest.get("source", {}).get("model_id") != SOURCE_ID or config is None:
        raise ValueError(
            f"artifact source {manifest.get('source')} is not the embedded VLA "
            "(no model_config in its manifest)"
        )
    return EmbeddedVLA.from_minilm(EmbeddedVLAConfig.from_json(json.dumps(config)))


def load_embedded_artifact(
    path: Path, mode: str = "materialize", device: str = "cpu"
) -> EmbeddedVLA:
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    return load_artifact(path, embedded_factory, mode=mode, device=device, dtype=dtype)


def artifact_info(model: EmbeddedVLA) -> dict[str, Any]:
    """PolicyInfo fields of a loaded artifact: its name, variant, rank and resident memory."""
    manifest = model.artifact["manifest"]
    policy = str(manifest.get("rank_policy", ""))
    rank = int(policy.removeprefix("rank:")) if policy.startswith("rank:") else -1
    return {
        "model_id": Path(model.artifact["path"]).name,
        "variant": "gluestick" if rank != 0 else "pruned",
        "rank": rank,
        "memory_bytes": memory_report(model)["resident_bytes"],
    }


def compress(
    dense: EmbeddedVLA,
    method: str,
    pattern: str,
    ranks: Sequence[int | str],
    frames: dict[str, tuple[np.ndarray, Sequence[str]]] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    svd: str = "exact",
    factor_dtype: str = "float16",
    progress: bool = True,
) -> dict[str, EmbeddedVLA]:
    """Prune once, then one GLUESTICK model per rank policy ({'0': pruned, '64': ..., ...}).
    `frames` ({task: (images, instructions)}) calibrate Wanda and SparseGPT."""
    from vla_pruned_ros.compression import gluestick, prune

    calib = None
    if frames is not None:
        calib = list(calibration_batches(dense, frames))
    pruned = prune(dense, method, pattern, calib=calib, include=include, exclude=exclude,
                   progress=progress)  # fmt: skip
    out = {}
    for rank in ranks:
        key = str(rank)
        out[key] = (
            pruned
            if key in ("0", "rank:0")
            else gluestick(
                dense, pruned, rank, svd=svd, factor_dtype=factor_dtype, progress=progress
            )
        )
    return out
