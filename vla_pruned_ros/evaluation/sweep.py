"""The closed-loop pruning table: dense, pruned, and pruned + GLUESTICK at several ranks, every
variant on the same held-out scenes of every task.

Artifacts are built once (prune once per method, one GLUESTICK model per rank) and evaluated
through the same `load_policy` path the ROS node uses. Each (variant, task) cell is saved as
soon as it finishes, so an interrupted sweep picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_jobs
from vla_pruned_ros.evaluation.stats import summarize
from vla_pruned_ros.params_file import params_dataclass

NODE = "vla_eval_sweep"
KEEP = ("seed", "success", "unsafe", "collisions", "violations", "steps", "spl", "distance_to_goal")


@dataclass
class TableConfig:
    """What every closed-loop table shares: the model, tasks, scenes, workers, caches, outputs."""

    model: str = "embedded"
    tasks: list[str] = field(default_factory=lambda: ["nav", "manip"])
    episodes: int = 200
    seed: int = 0
    workers: int = 2
    calib_scenes: int = 8
    cells_dir: str = "runs/sweep/cells"
    plots_dir: str = "docs/img"


@dataclass
class SweepConfig(TableConfig):
    methods: list[str] = field(default_factory=lambda: ["magnitude"])
    pattern: str = "2:4"
    ranks: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    svd: str = "exact"
    factor_dtype: str = "float16"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    artifacts_dir: str = "runs/sweep/artifacts"
    json: str = "results/closed_loop.json"
    markdown: str = "docs/results.md"

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> SweepConfig:
        return params_dataclass(cls, path, NODE, overrides)


@dataclass(frozen=True)
class Variant:
    name: str  # "dense", "magnitude_2:4", "magnitude_2:4_r64"
    method: str  # "" for dense
    rank: int  # -1 for dense, 0 for the plain pruned model
    artifact: str  # what load_policy takes
    memory: dict[str, Any]


def _safe(name: str) -> str:
    return name.replace(":", "-").replace("/", "_")


def build_variants(cfg: SweepConfig, progress: bool = True) -> list[Variant]:
    """Dense plus, per method, the pruned model and one GLUESTICK model per rank (cached: an
    artifact folder that already loads is reused)."""
    from vla_pruned_ros.compression import memory_report, read_manifest
    from vla_pruned_ros.compression.artifact import ArtifactError
    from vla_pruned_ros.models.embedded import DEFAULT_WEIGHTS, load_embedded
    from vla_pruned_ros.models.embedded_artifact import (
        compress,
        load_embedded_artifact,
        save_embedded_artifact,
    )

    source = DEFAULT_WEIGHTS if cfg.model == "embedded" else Path(cfg.model)
    dense = load_embedded(source)
    variants = [Variant("dense", "", -1, cfg.model, memory_report(dense, value_bytes=2))]
    root = Path(cfg.artifacts_dir)
    frames = None
    for method in cfg.methods:
        names = {r: f"{method}_{cfg.pattern}" + (f"_r{r}" if r else "") for r in [0, *cfg.ranks]}
        missing = []
        for rank, name in names.items():
            try:
                read_manifest(root / _safe(name))
            except ArtifactError:
                missing.append(rank)
        if missing:
            if method in ("wanda", "sparsegpt") and frames is None:
                from vla_pruned_ros.training.collect import expert_frames

                seeds = list(range(cfg.calib_scenes))
                frames = {t: expert_frames(t, seeds) for t in dense.config.action_dims}
            models = compress(
                dense, method, cfg.pattern, missing, frames if method != "magnitude" else None,
                cfg.include or None, cfg.exclude or None, cfg.svd, cfg.factor_dtype, progress,
            )  # fmt: skip
            for rank in missing:
                save_embedded_artifact(
                    models[str(rank)], root / _safe(names[rank]), source, overwrite=True
                )
        for rank, name in names.items():
            folder = root / _safe(name)
            model = load_embedded_artifact(folder, mode="packed")
            report = memory_report(model, value_bytes=2)
            report["artifact_bytes"] = sum(
                (folder / f).stat().st_size
                for f in read_manifest(folder, verify=False)["files"]
                if f != "spectra.safetensors"
            )
            variants.append(Variant(name, method, rank, str(folder), report))
    return variants


def _cell(cfg: SweepConfig, variant: Variant, task: str, progress: bool) -> dict[str, Any]:
    path = Path(cfg.cells_dir) / f"{_safe(variant.name)}__{task}.json"
    key = {"variant": variant.name, "task": task, "episodes": cfg.episodes, "seed": cfg.seed}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    from tqdm import tqdm

    jobs = [EvalJob(task, variant.artifact, s) for s in heldout_seeds(cfg.seed, cfg.episodes)]
    records = list(tqdm(run_jobs(jobs, cfg.workers), total=len(jobs), unit="ep",
                        desc=f"{variant.name} {task}", disable=not progress))  # fmt: skip
    cell = {
        "key": key,
        "summary": summarize(records),
        "episodes": [{k: r.get(k) for k in KEEP if k in r} for r in records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell))
    os.replace(tmp, path)
    return cell


def run_sweep(cfg: SweepConfig, progress: bool = True) -> dict[str, Any]:
    variants = build_variants(cfg, progress)
    rows = []
    for variant in variants:
        tasks = {}
        for task in cfg.tasks:
            cell = _cell(cfg, variant, task, progress)
            tasks[task] = {"summary": cell["summary"], "episodes": cell["episodes"]}
        rows.append({**dataclasses.asdict(variant), "tasks": tasks})
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": dataclasses.asdict(cfg),
        "variants": rows,
    }
