"""The sweep's variants of a user's own checkpoint (`model: DIR`, a Hugging Face folder): dense,
pruned and GLUESTICK-corrected, built by the checkpoint compression path and evaluated through
the adapter the policy node would use.

Per (method, pattern) the checkpoint is pruned once, by what `vla-prune --model DIR --rank 0`
runs (magnitude streamed tensor by tensor, Wanda/SparseGPT block by block on the expert frames
through the checkpoint's own processor); every rank and factor dtype is then derived from that
one pruned artifact (`compression.derive.derive_corrected`), so all of them share its pruned
tensors byte for byte and record which pruning they came from (`extra.pruned_from`). Every
variant, the dense folder included, loads through `load_policy` with the table's adapter and
options (`adapter`, `adapter_options`, `action_map`, `unnorm_key`, `trust_remote_code`), and
a model whose actions are not a task's is refused before anything is built, naming both.

Artifacts and cells live in a folder of their own under the table's (`checkpoint-<name>/`), so
they never meet the embedded VLA's caches of the same variant names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vla_pruned_ros.evaluation.sweep import SweepConfig, Variant

# Wanda/SparseGPT calibration samples for a checkpoint (the pruning authors use 128): frames
# taken evenly from the expert episodes of `calib_scenes` training scenes of the table's tasks.
CALIB_SAMPLES = 128
# What the embedded table writes by default; a checkpoint table writes beside its own caches.
EMBEDDED_OUTPUTS = {"json": "results/closed_loop.json", "markdown": "docs/results.md",
                    "plots_dir": "docs/img"}  # fmt: skip


def is_checkpoint(model: str) -> bool:
    """Whether the table's model is a user's Hugging Face folder (not the embedded VLA)."""
    from vla_pruned_ros.models.hf_checkpoint import is_hf_folder

    return model not in ("", "embedded") and is_hf_folder(Path(model).expanduser())


def scope(model: str) -> str:
    """The folder a checkpoint's artifacts and cells go in, under the table's folders."""
    return f"checkpoint-{Path(model).expanduser().resolve().name}"


def scoped_paths(cfg: SweepConfig) -> dict[str, str]:
    """A checkpoint table's caches in their own folder, and its outputs beside them where the
    config still names the embedded table's (so `vla-eval sweep --model DIR` on the package's
    config never overwrites results/closed_loop.json)."""
    name = scope(cfg.model)
    if Path(cfg.cells_dir).name == name:  # already scoped (a copy of a scoped config)
        return {}
    out = {"artifacts_dir": str(Path(cfg.artifacts_dir) / name),
           "cells_dir": str(Path(cfg.cells_dir) / name)}  # fmt: skip
    base = Path(cfg.cells_dir).parent / name
    moved = {"json": str(base / "closed_loop.json"), "markdown": str(base / "closed_loop.md"),
             "plots_dir": str(base / "img")}  # fmt: skip
    for key, default in EMBEDDED_OUTPUTS.items():
        if getattr(cfg, key) == default:
            out[key] = moved[key]
    return out


def table_loader(cfg: SweepConfig) -> dict[str, Any]:
    """`load_policy` keyword arguments every variant is evaluated with ({} for the embedded
    VLA with no adapter settings: its jobs and cell keys stay as they always were)."""
    from vla_pruned_ros.models.adapters import adapter_options
    from vla_pruned_ros.models.registry import EMBEDDED, adapter_problem

    options = dict(cfg.adapter_options or {})
    if cfg.action_map:
        options["action_map"] = dict(cfg.action_map)
    adapter = cfg.adapter or EMBEDDED
    if adapter == EMBEDDED and not options and not cfg.unnorm_key and not cfg.trust_remote_code:
        return {}
    problem = adapter_problem(adapter)
    if problem:
        raise ValueError(problem)
    return {"adapter": adapter,
            **adapter_options(options, cfg.unnorm_key, cfg.trust_remote_code)}  # fmt: skip


def check_actions(model: str, tasks: list[str], loader: dict[str, Any]) -> None:
    """Load the dense model through the table's adapter for each task and refuse one whose
    actions are not the task's (ValueError naming both spaces and `action_map`)."""
    from vla_pruned_ros.evaluation.closed_loop import check_task_actions, shared_model
    from vla_pruned_ros.models.registry import load_policy

    for task in tasks:
        check_task_actions(load_policy(shared_model(model), task, **loader).info, task)


def _config_sha256(folder: Path, loader: dict[str, Any]) -> str:
    """Fingerprint of the checkpoint's config and the adapter setup it is evaluated with: an
    other action_map or unnorm_key changes what every variant does."""
    import json

    text = (folder / "config.json").read_text() + json.dumps(loader, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _calibration(cfg: SweepConfig, folder: Path) -> list:
    """Wanda/SparseGPT inputs: expert frames of training scenes through the checkpoint's own
    processor and the adapter's prompt (OpenVLA's by default)."""
    import numpy as np

    from vla_pruned_ros.models import hf_sequential as hs
    from vla_pruned_ros.models.adapters import OPENVLA_PROMPT
    from vla_pruned_ros.training.collect import expert_frames

    images, texts = [], []
    for task in cfg.tasks:
        frames, instructions = expert_frames(task, list(range(cfg.calib_scenes)))
        images += list(frames)
        texts += list(instructions)
    pick = np.linspace(0, len(texts) - 1, min(CALIB_SAMPLES, len(texts))).round().astype(int)
    prompt = (cfg.adapter_options or {}).get("prompt") or OPENVLA_PROMPT
    return hs.calibration_inputs(folder, [images[i] for i in pick], [texts[i] for i in pick],
                                 prompt, cfg.trust_remote_code)  # fmt: skip


def _prune(cfg: SweepConfig, folder: Path, out: Path, method: str, pattern: str,
           progress: bool) -> Path:  # fmt: skip
    """The one pruning of (method, pattern): the plain pruned artifact, as vla-prune writes it."""
    from vla_pruned_ros.models.hf_checkpoint import compress_checkpoint

    options = dict(svd=cfg.svd, factor_dtype=_dtypes(cfg)[0], overwrite=True, progress=progress)
    include, exclude = cfg.include or None, cfg.exclude or None
    if method == "magnitude":
        return compress_checkpoint(folder, out, pattern, 0, include, exclude,
                                   cfg.trust_remote_code, **options)  # fmt: skip
    from vla_pruned_ros.models.hf_sequential import sequential_compress

    calib = _calibration(cfg, folder)
    source = f"{len(calib)} expert frames, training scenes 0-{cfg.calib_scenes - 1} of each task"
    return sequential_compress(folder, out, method, pattern, 0, calib, include, exclude,
                               trust_remote_code=cfg.trust_remote_code, calib_source=source,
                               **options)  # fmt: skip


def _dtypes(cfg: SweepConfig) -> list[str]:
    from vla_pruned_ros.evaluation.sweep import factor_dtypes

    return factor_dtypes(cfg)


def _check_supported(cfg: SweepConfig) -> None:
    """What the checkpoint path cannot build yet, refused before any work with what to do."""
    if any(c != "svd" for c in cfg.corrections):
        raise ValueError("a checkpoint table takes corrections: [svd]; the activation correction "
                         "of a checkpoint is built block by block per rank by vla-prune --model "
                         "DIR --correction activation, not derived from one pruning")  # fmt: skip
    ranks = {str(r) for p in cfg.patterns for r in cfg.pattern_ranks.get(p, cfg.ranks)}
    policies = sorted(r for r in ranks if not r.isdigit())
    if policies:
        raise ValueError(f"a checkpoint table takes fixed integer ranks, not {policies} (energy "
                         "and budget policies need every layer's spectrum first): give them "
                         "as --ranks 8 32 or ranks: [8, 32] in the config")  # fmt: skip


def derived_from(folder: Path) -> str:
    """The manifest sha256 of the pruned artifact a corrected one was derived from ('')."""
    from vla_pruned_ros.compression import read_manifest

    extra = read_manifest(folder, verify=False).get("extra") or {}
    return str((extra.get("pruned_from") or {}).get("manifest_sha256", ""))


def build_checkpoint_variants(cfg: SweepConfig, progress: bool = True) -> list[Variant]:
    """Dense, then per (method, pattern) the pruned artifact (pruned once) and one corrected
    artifact per rank and factor dtype derived from it (cached: an artifact made from these
    weights, and for a corrected one from the current pruned artifact, is reused)."""
    from vla_pruned_ros.compression import memory_report
    from vla_pruned_ros.compression.artifact_layout import sha256_file
    from vla_pruned_ros.compression.derive import derive_corrected
    from vla_pruned_ros.compression.safetensors_io import safetensors_keys
    from vla_pruned_ros.evaluation.sweep import (
        Variant,
        _safe,
        _say,
        artifact_memory,
        reusable_artifact,
        variant_specs,
    )
    from vla_pruned_ros.models.hf_checkpoint import (
        checkpoint_files,
        load_checkpoint_artifact,
        model_keys,
        skeleton,
        source_identity,
    )

    folder = Path(cfg.model).expanduser().resolve()
    _check_supported(cfg)
    loader = table_loader(cfg)
    check_actions(str(folder), cfg.tasks, loader)
    files = checkpoint_files(folder)
    sha = source_identity(folder, files)["sha256"]
    conf = _config_sha256(folder, loader)
    meta = skeleton(folder, cfg.trust_remote_code, "meta")  # shapes only: no weight memory
    rename = model_keys(meta, [k for f in files for k in safetensors_keys(f)])
    variants = [Variant("dense", "", -1, str(folder), memory_report(meta, value_bytes=2),
                        model_sha256=sha, config_sha256=conf, loader=loader)]  # fmt: skip
    root = Path(cfg.artifacts_dir)
    for method in cfg.methods:
        for pattern in cfg.patterns:
            specs = variant_specs(cfg, method, pattern)
            base = root / _safe(specs[0][0])
            if not reusable_artifact(base, sha):
                _say(f"prune {method} {pattern} of {folder.name}: once, for {len(specs)} "
                     "variants")  # fmt: skip
                _prune(cfg, folder, base, method, pattern, progress)
            pruned_sha = sha256_file(base / "manifest.json")
            for name, rank, _, dtype in specs[1:]:
                out = root / _safe(name)
                if not (reusable_artifact(out, sha) and derived_from(out) == pruned_sha):
                    derive_corrected(base, files, out, int(rank), cfg.svd, dtype, rename,
                                     overwrite=True, progress=progress)  # fmt: skip
            for name, rank, correction, dtype in specs:
                out = root / _safe(name)
                trust = cfg.trust_remote_code
                model = load_checkpoint_artifact(out, mode="packed", trust_remote_code=trust)
                report, manifest = artifact_memory(out, model)
                del model
                variants.append(Variant(name, method, int(rank), str(out), report, pattern,
                                        str(manifest["rank_policy"]), sha, conf, {},
                                        correction, dtype, loader))  # fmt: skip
    return variants
