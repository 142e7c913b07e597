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
from vla_pruned_ros.compression.artifact_layout import sha256_file
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
            enc = tokenizer(distinct, model.config.max_text_tokens)
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


def embedded_factory_config(manifest: dict[str, Any]) -> EmbeddedVLAConfig:
    """The embedded VLA's config an artifact's manifest records; a ValueError for another
    model's artifact."""
    config = manifest.get("extra", {}).get("model_config")
    if manifest.get("source", {}).get("model_id") != SOURCE_ID or config is None:
        raise ValueError(
            f"artifact source {manifest.get('source')} is not the embedded VLA "
            "(no model_config in its manifest)"
        )
    return EmbeddedVLAConfig.from_json(json.dumps(config))


def embedded_factory(manifest: dict[str, Any]) -> EmbeddedVLA:
    """The dense skeleton an artifact's tensors go into (with MiniLM's word embeddings)."""
    model = EmbeddedVLA.from_minilm(embedded_factory_config(manifest))
    structure = manifest.get("structure")
    if structure:  # a structurally pruned encoder: rebuild its smaller shapes first
        from vla_pruned_ros.compression.structured import apply_structure

        apply_structure(model.text, structure["units"])
    return model


def load_embedded_artifact(path: Path, mode: str | None = None, device: str = "cpu") -> EmbeddedVLA:
    """An embedded-VLA artifact on `device` (fp32 on CPU, fp16 on CUDA), its pruned layers in
    `mode` (default `auto`: sparse on CPU, see `compression.runtime_modes`)."""
    return load_artifact(path, embedded_factory, mode=mode, device=device, dtype=_dtype(device))


def _dtype(device: str) -> torch.dtype:
    return torch.float16 if str(device).startswith("cuda") else torch.float32


VISION_MODES = (None, "auto", "sparse", "materialize")  # what load_embedded_vision_artifact takes


def embedded_vision_factory(manifest: dict[str, Any]) -> EmbeddedVLA:
    """An artifact's skeleton without its text encoder (`EmbeddedVLA.without_text`: no
    MiniLM weights), for `load_artifact(..., leave_out=("text",))`."""
    return EmbeddedVLA.without_text(embedded_factory_config(manifest))


def load_embedded_vision_artifact(
    path: Path, mode: str | None = None, device: str = "cpu"
) -> tuple[EmbeddedVLA, dict[str, Any], str]:
    """An embedded-VLA artifact's vision stem and heads without its text encoder, for a caller
    that has the text features already (offline replay with cached instruction features):
    the same modules, modes and weights as `load_embedded_artifact` gives them, without
    reading MiniLM's weights or the encoder's tensors. Returns the
    model, the full model's PolicyInfo fields (`artifact_info`, its `memory_bytes` those of
    the whole model) and the full model's `runtime_summary(...).modes`, both worked out from
    the manifest, the tensor headers and MiniLM's config.json (`load_artifact`'s `left_out`).
    `mode`: one of VISION_MODES (the others need the layers themselves)."""
    from vla_pruned_ros.compression.memory import resident_bytes
    from vla_pruned_ros.compression.runtime_modes import modes_text
    from vla_pruned_ros.models.embedded_config import minilm_path

    if mode not in VISION_MODES:
        raise ValueError(f"mode {mode!r}: the vision-only load takes {VISION_MODES}")
    dtype = _dtype(device)
    model = load_artifact(path, embedded_vision_factory, mode=mode, device=device, dtype=dtype,
                          leave_out=("text",))  # fmt: skip
    info, left = model.artifact, model.artifact["left_out"]
    minilm = json.loads((minilm_path() / "config.json").read_text())
    width = torch.empty((), dtype=dtype).element_size()
    provided = {"text.embeddings.word_embeddings.weight": minilm["vocab_size"]
                * minilm["hidden_size"] * width}  # fmt: skip
    unknown = sorted(set(left["provided_by_factory"]) - set(provided))
    if unknown:
        raise ValueError(f"{path}: the text encoder's factory tensors {unknown} are not known "
                         "to the vision-only load; load the whole artifact")  # fmt: skip
    # The text encoder (`models.minilm.MiniLM`) holds nothing besides its state dict.
    memory = resident_bytes(model) + left["bytes"] + sum(
        provided[k] for k in left["provided_by_factory"])  # fmt: skip
    modes = {**left["layer_modes"], **info["layer_modes"]}  # the text encoder's layers first
    fallbacks = {**left["fallbacks"], **info["fallbacks"]}
    note = info.get("sparse_path") or left.get("sparse_path")
    runtime = modes_text(modes, fallbacks, note)[0]
    return model, artifact_info(model, memory_bytes=memory), runtime


def checked_artifact_encoder(
    path: Path, mode: str | None, device: str, runtime: str, memory_bytes: int
) -> EmbeddedVLA:
    """The whole artifact (`load_embedded_artifact`), refused if its runtime modes or resident
    bytes are not what `load_embedded_vision_artifact` worked out for it (they name its
    features in the instruction cache and its PolicyInfo)."""
    from vla_pruned_ros.compression.runtime_modes import runtime_summary

    model = load_embedded_artifact(path, mode=mode, device=device)
    got = runtime_summary(model).modes, artifact_info(model)["memory_bytes"]
    if got != (runtime, memory_bytes):
        raise RuntimeError(f"{path}: loaded whole, the artifact runs as {got[0]!r} holding "
                           f"{got[1]} bytes, but its vision-only load worked out {runtime!r} "
                           f"and {memory_bytes} bytes")  # fmt: skip
    return model


def artifact_info(model: EmbeddedVLA, memory_bytes: int | None = None) -> dict[str, Any]:
    """PolicyInfo fields of a loaded artifact: its name, variant, rank and resident memory
    (`memory_bytes` where the caller knows the whole model's and `model` is a part of it)."""
    manifest = model.artifact["manifest"]
    policy = str(manifest.get("rank_policy", ""))
    rank = int(policy.removeprefix("rank:")) if policy.startswith("rank:") else -1
    variant = "gluestick" if rank != 0 else "pruned"
    if manifest.get("structure"):
        variant = "structured" if not manifest["layers"] else f"structured+{variant}"
    return {
        "model_id": Path(model.artifact["path"]).name,
        "variant": variant,
        "rank": rank,
        "memory_bytes": (
            memory_report(model)["resident_bytes"] if memory_bytes is None else memory_bytes
        ),
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
    conv: bool = False,
    correction: str = "svd",
    damp: float = 0.01,
    calib_source: str = "",
    pruned: EmbeddedVLA | None = None,
) -> dict[str, EmbeddedVLA]:
    """Prune once, then one GLUESTICK model per rank policy ({'0': pruned, '64': ..., ...}).
    `frames` ({task: (images, instructions)}) calibrate Wanda and SparseGPT, and the
    `correction="activation"` factors (input statistics gathered once, on the dense model).
    `pruned`: the model already pruned by `method` and `pattern` (a previous call's '0'), so a
    table of corrections and factor dtypes prunes once; it is not pruned again."""
    from vla_pruned_ros.compression import gluestick, prune
    from vla_pruned_ros.compression.calibration import collect_input_stats
    from vla_pruned_ros.compression.prune import compressed_layers

    calib = None
    if frames is not None:
        calib = list(calibration_batches(dense, frames))
    if pruned is None:
        pruned = prune(dense, method, pattern, calib=calib, include=include, exclude=exclude,
                       progress=progress, conv=conv)  # fmt: skip
    stats = None
    if correction == "activation":
        if calib is None:
            raise ValueError("the activation correction needs calibration frames")
        dense.eval()
        stats = collect_input_stats(dense, list(compressed_layers(pruned)), calib,
                                    with_hessian=True, progress=progress)  # fmt: skip
    out = {}
    for rank in ranks:
        key = str(rank)
        out[key] = (
            pruned
            if key in ("0", "rank:0")
            else gluestick(
                dense,
                pruned,
                rank,
                svd=svd,
                factor_dtype=factor_dtype,
                progress=progress,
                correction=correction,
                stats=stats,
                damp=damp,
                calib_source=calib_source,
            )  # fmt: skip
        )
    return out


def structured_prune(
    dense: EmbeddedVLA,
    plan: dict[str, dict[str, Any]],
    criterion: str = "divergence",
    relative: bool = False,
    frames: dict[str, tuple[np.ndarray, Sequence[str]]] | None = None,
    seed: int = 0,
) -> tuple[EmbeddedVLA, dict[str, Any]]:
    """Remove whole units from the language transformer: `plan` maps a unit module ('ffn',
    'heads') to {'ratio': share removed, 'keep': 'high' | 'low'}, ranked across layers by
    `criterion` (divergence from the original MiniLM, magnitude, wanda or random).
    Returns the smaller model and its structure (what the artifact records)."""
    import copy

    from vla_pruned_ros.compression import structured as st

    units = st.enumerate_units(dense.text)
    if criterion == "divergence":
        base = EmbeddedVLA.from_minilm(dense.config).text  # the base VLM before adaptation
        scores = st.divergence_scores(dense.text, base, units, relative=relative)
    elif criterion == "magnitude":
        scores = st.magnitude_scores(dense.text, units)
    elif criterion == "wanda":
        from vla_pruned_ros.compression.calibration import collect_input_stats

        if frames is None:
            raise ValueError("wanda unit scores need calibration frames")
        names = st.wanda_inputs(dense.text)
        stats = collect_input_stats(
            dense, [f"text.{n}" for n in names], list(calibration_batches(dense, frames))
        )
        scores = st.wanda_scores(
            dense.text, units, {n: stats[f"text.{n}"].feature_norms() for n in names}
        )
    elif criterion == "random":
        scores = st.random_scores(units, seed)
    else:
        raise ValueError(f"unknown unit criterion {criterion!r}; use one of {st.CRITERIA}")
    removal = []
    for module, spec in plan.items():
        removal += st.choose_removal(scores, module, float(spec["ratio"]), spec.get("keep", "high"))
    text, structure = st.remove_units(dense.text, removal)
    model = copy.copy(dense)  # shares the untouched parts' modules; the encoder is new
    model._modules = dict(dense._modules)
    model.text = text
    info = {
        "criterion": criterion,
        "relative": relative,
        "plan": plan,
        "removed": st.count_removed(structure, dense.text),
        "params": sum(p.numel() for p in model.parameters()),
        "params_dense": sum(p.numel() for p in dense.parameters()),
    }
    return model, {"units": structure, **info}
