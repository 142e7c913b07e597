"""The closed-loop pruning table: dense, pruned, and pruned + GLUESTICK at several ranks, every
variant on the same held-out scenes of every task.

Artifacts are built once (prune once per method and pattern, every rank, correction and factor
dtype derived from that one pruned model) and evaluated through the same `load_policy` path
the ROS node uses. The model is the embedded VLA (or a saved one), or a user's own checkpoint
folder evaluated through an adapter (`adapter`, `adapter_options`, `action_map`, ...;
evaluation/sweep_checkpoint.py). The cells left to run go through one
parallel call (evaluation/parallel.py: in process, or Ray tasks with `ray`); each (variant, task)
cell is saved as soon as it finishes, so an interrupted sweep picks up where it stopped, and a
cell that fails is reported with its error while the rest of the table completes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_pruned_ros.evaluation.closed_loop import (
    EpisodeCell,
    EvalJob,
    adapter_fields,
    heldout_seeds,
    run_cells,
    shared_model,
)
from vla_pruned_ros.evaluation.parallel import Parallel
from vla_pruned_ros.evaluation.provenance import machine
from vla_pruned_ros.evaluation.stats import summarize
from vla_pruned_ros.params_file import params_dataclass
from vla_pruned_ros.paths import atomic_write
from vla_pruned_ros.sim.registry import TASKS

NODE = "vla_eval_sweep"
KEEP = ("seed", "success", "unsafe", "collisions", "violations", "steps", "spl", "distance_to_goal")


@dataclass
class TableConfig:
    """What every closed-loop table shares: the model, tasks, scenes, where it runs, caches,
    outputs."""

    model: str = "embedded"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    episodes: int = 200
    seed: int = 0
    ray: str = ""  # "" in process; "local", "auto", "HOST:PORT", "ray://HOST:10001" (docs/ray.md)
    num_cpus: float = 1.0  # per task, and its torch threads (part of what the table is)
    num_gpus: float = 0.0  # per task; fractions share a device
    shard_episodes: int = 10  # episodes per task
    max_retries: int = 3  # re-runs of a task whose worker died
    calib_scenes: int = 8
    cells_dir: str = "runs/sweep/cells"
    plots_dir: str = "docs/img"

    def parallel(self, progress: bool = True) -> Parallel:
        return Parallel(self.ray or None, self.num_cpus, self.num_gpus, self.max_retries,
                        self.shard_episodes, progress)  # fmt: skip


@dataclass
class SweepConfig(TableConfig):
    methods: list[str] = field(default_factory=lambda: ["magnitude"])
    patterns: list[str] = field(default_factory=lambda: ["2:4"])
    # GLUESTICK rank policies: integers, "energy:F" or "budget:MB" (0, pruned only, always runs)
    ranks: list[int | str] = field(default_factory=lambda: [8, 16, 32, 64])
    # a pattern's own rank policies instead of `ranks` ({"unstructured:0.7": [4, 8, 16, 32]})
    pattern_ranks: dict[str, list[int | str]] = field(default_factory=dict)
    # GLUESTICK corrections: "svd" (the paper's) and/or "activation" (the output error on the
    # calibration frames); every rank policy is built with each
    corrections: list[str] = field(default_factory=lambda: ["svd"])
    heldout_phrasing: int = 50  # episodes per cell with held-out instruction templates
    svd: str = "exact"
    factor_dtype: str | list[str] = "float16"  # or several: each rank policy in each
    damp: float = 0.01  # activation correction: damping of X^T X, share of its mean diagonal
    # also prune the vision pathway's groups=1 Conv2d layers (`vla-prune --conv`), a harder
    # regime; every variant's name then carries `_conv` after its pattern
    conv: bool = False
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    artifacts_dir: str = "runs/sweep/artifacts"
    json: str = "results/closed_loop.json"
    markdown: str = "docs/results.md"
    # A checkpoint `model` (a Hugging Face folder) is evaluated through the adapter the policy
    # node would use, with the node's options: a preset or module:Class, its options, the
    # map from its actions to the task's, the dataset statistics, the opt-in to its own code.
    adapter: str = ""  # "" or embedded: the embedded VLA; openvla | lerobot | text | module:Class
    adapter_options: dict[str, Any] = field(default_factory=dict)
    action_map: dict[str, Any] = field(default_factory=dict)  # {names, order, scale}
    unnorm_key: str = ""
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        from vla_pruned_ros.evaluation.sweep_checkpoint import is_checkpoint, scoped_paths

        if is_checkpoint(self.model):  # its caches (and outputs) never meet the embedded table's
            if self.conv:
                raise ValueError("conv: a checkpoint sweep prunes its Linear layers only; "
                                 "pruning convolutions is the embedded VLA's option")  # fmt: skip
            for key, value in scoped_paths(self).items():
                setattr(self, key, value)

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> SweepConfig:
        return params_dataclass(cls, path, NODE, overrides)


@dataclass(frozen=True)
class Variant:
    name: str  # "dense", "magnitude_2:4", "magnitude_2:4_r64", "wanda_2:4_energy-0.9"
    method: str  # "" for dense
    rank: int  # -1 for dense or a per-layer policy, 0 for the plain pruned model
    artifact: str  # what load_policy takes
    memory: dict[str, Any]
    pattern: str = ""
    rank_policy: str = ""  # "rank:64", "energy:0.9", "budget:1MB"; "" for dense
    model_sha256: str = ""  # of the dense weights every variant was made from
    config_sha256: str = ""  # of the dense model's config, its action gains aside
    action_gain: dict[str, float] = field(default_factory=dict)  # the dense model's, per task
    correction: str = ""  # "svd" or "activation" for a corrected variant, "" otherwise
    factor_dtype: str = ""  # of the correction's factors, "" without one
    loader: dict[str, Any] = field(default_factory=dict)  # load_policy's adapter arguments
    artifact_sha256: str = ""  # of a compressed variant's tensors (what exactly was built)
    runtime: str = ""  # what its pruned layers ran on (kernels.kernel_build), "" for dense
    conv: bool = False  # its vision convolutions were pruned too


def source_weights(model: str) -> tuple[Path, str]:
    """The folder of the dense embedded VLA a table is about and its weights' sha256: cached
    artifacts and cells made from other weights (a retrained model) are not reused."""
    from vla_pruned_ros.compression.artifact import sha256_file
    from vla_pruned_ros.models.embedded import DEFAULT_WEIGHTS

    folder = DEFAULT_WEIGHTS if model == "embedded" else Path(model)
    weights = folder / "model.safetensors"
    return folder, sha256_file(weights) if weights.is_file() else ""


def config_sha256(config: Any) -> str:
    """Fingerprint of a dense model's config, its action gains aside (a cell's key holds the
    gain of its own task): a new gain changes what every variant does on that task without
    touching the weights, so cached artifacts and cells must not outlive it."""
    import hashlib

    rest = dataclasses.replace(config, action_gain={})
    return hashlib.sha256(rest.to_json().encode()).hexdigest()


def reusable_artifact(folder: Path, model_sha256: str, model_config: Any = None,
                      build: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Whether `folder` holds a complete artifact made from the weights with this sha256 (and,
    given them, the same model config and the same build settings: calibration scenes and
    damping change the artifact without changing its name)."""
    from vla_pruned_ros.compression import read_manifest
    from vla_pruned_ros.compression.artifact import ArtifactError

    try:
        manifest = read_manifest(folder)
    except ArtifactError:
        return False
    if model_config is not None:
        stored = (manifest.get("extra") or {}).get("model_config")
        if stored != json.loads(model_config.to_json()):
            return False
    if build is not None and (manifest.get("extra") or {}).get("sweep_build") != build:
        return False
    return (manifest.get("source") or {}).get("sha256") == model_sha256


def _policy_suffix(rank: int | str) -> str:
    text = str(rank)
    return f"_r{text}" if text.isdigit() else "_" + text.replace(":", "-")


def _correction_suffix(correction: str, factor_dtype: str) -> str:
    """What a variant's name adds for a non-default correction or factor dtype (none for the
    paper's svd at fp16, so the main table's names and cached cells stay as they were)."""
    short = {"activation": "_act", "svd": ""}
    dtypes = {"float16": "", "int8": "_int8", "float32": "_fp32"}
    if correction not in short:
        raise ValueError(f"unknown correction {correction!r}; use svd or activation")
    if factor_dtype not in dtypes:
        raise ValueError(f"unknown factor dtype {factor_dtype!r}; use {sorted(dtypes)}")
    return short[correction] + dtypes[factor_dtype]


def factor_dtypes(cfg: SweepConfig) -> list[str]:
    """The config's factor dtypes as a list (one string is one dtype)."""
    return [cfg.factor_dtype] if isinstance(cfg.factor_dtype, str) else list(cfg.factor_dtype)


def variant_specs(cfg: SweepConfig, method: str, pattern: str) -> list[tuple[str, str, str, str]]:
    """(name, rank policy, correction, factor dtype) of every variant of one method and
    pattern: the plain pruned model first (rank '0'), then each rank policy with each
    correction and factor dtype ('activation-budget:N' only with the activation correction: it
    ranks by output error, which the plain SVD does not measure)."""
    base = f"{method}_{pattern}" + ("_conv" if cfg.conv else "")
    ranks = cfg.pattern_ranks.get(pattern, cfg.ranks)
    specs = [(base, "0", "", "")]
    for correction in cfg.corrections:
        for dtype in factor_dtypes(cfg):
            suffix = _correction_suffix(correction, dtype)
            specs += [(base + _policy_suffix(r) + suffix, str(r), correction, dtype)
                      for r in ranks if str(r) != "0" and (correction == "activation"
                      or not str(r).startswith("activation-budget"))]  # fmt: skip
    return specs


def build_settings(cfg: SweepConfig, method: str, pattern: str, rank: str, correction: str,
                   factor_dtype: str) -> dict[str, Any]:  # fmt: skip
    """Everything a sweep artifact is built from beside the dense weights, as its manifest
    records it (`extra.sweep_build`): a cached artifact is reused only when these match."""
    calibrated = method in ("wanda", "sparsegpt") or correction == "activation"
    # `conv` only when on, so the artifacts cached before the option existed still match
    return {"method": method, "pattern": pattern, "rank_policy": rank,
            "correction": correction, "factor_dtype": factor_dtype, "svd": cfg.svd,
            "include": list(cfg.include), "exclude": list(cfg.exclude),
            "calib_scenes": cfg.calib_scenes if calibrated else 0,
            "damp": cfg.damp if correction == "activation" else 0.0,
            **({"conv": True} if cfg.conv else {})}  # fmt: skip


def tensors_sha256(manifest: dict[str, Any]) -> str:
    """One checksum of an artifact's tensor files (the manifest's sha256 of each, spectra
    aside), which loading the artifact has just verified: what a cell's result depends on.
    Not the manifest's bytes: they carry every task's action gain, and another task's new gain
    must not rerun this task's cells. The files are the same bytes whenever the same tensors
    are saved (`artifact_layout.file_metadata`), so a rebuilt but unchanged artifact keeps its
    cells; an artifact written before that (two metadata keys) reruns its cells once when it is
    rebuilt."""
    import hashlib

    files = {k: v for k, v in sorted(manifest["files"].items()) if not k.startswith("spectra")}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _safe(name: str) -> str:
    return name.replace(":", "-").replace("/", "_")


def artifact_memory(folder: Path, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A loaded variant's memory report (fp16 values) with its artifact's bytes on disk (the
    spectra aside: diagnostics, not model), and the artifact's manifest."""
    from vla_pruned_ros.compression import memory_report, read_manifest

    report = memory_report(model, value_bytes=2)
    manifest = read_manifest(folder, verify=False)
    report["artifact_bytes"] = sum((folder / f).stat().st_size for f in manifest["files"]
                                   if not f.startswith("spectra"))  # fmt: skip
    return report, manifest


def _say(text: str) -> None:
    import sys

    print(f"[vla-eval sweep] {text}", file=sys.stderr, flush=True)


def build_variants(cfg: SweepConfig, progress: bool = True) -> list[Variant]:
    """Dense plus, per method and pattern, the pruned model and one GLUESTICK model per rank
    policy, correction and factor dtype (cached: an artifact folder that already loads is
    reused). The model is pruned once per method and pattern, and only when an artifact of
    it is missing; every correction and dtype is derived from that pruned model. Wanda,
    SparseGPT and the activation correction calibrate on the same expert frames
    (`calib_scenes` training scenes per task). A checkpoint folder goes through
    `sweep_checkpoint.build_checkpoint_variants`."""
    from vla_pruned_ros.evaluation.sweep_checkpoint import (
        build_checkpoint_variants,
        is_checkpoint,
        table_loader,
    )

    if is_checkpoint(cfg.model):
        return build_checkpoint_variants(cfg, progress)
    from vla_pruned_ros.compression import memory_report
    from vla_pruned_ros.compression.kernels import kernel_build
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import (
        compress,
        load_embedded_artifact,
        save_embedded_artifact,
    )

    loader = table_loader(cfg)
    source, sha = source_weights(cfg.model)
    dense = load_embedded(source)
    conf = config_sha256(dense.config)
    variants = [Variant("dense", "", -1, cfg.model, memory_report(dense, value_bytes=2),
                        model_sha256=sha, config_sha256=conf,
                        action_gain=dense.config.action_gain, loader=loader)]  # fmt: skip
    root = Path(cfg.artifacts_dir)
    frames = None
    calib_source = f"expert frames, training scenes 0-{cfg.calib_scenes - 1} of each task"
    for method in cfg.methods:
        for pattern in cfg.patterns:
            specs = variant_specs(cfg, method, pattern)
            builds = {s[0]: build_settings(cfg, method, pattern, *s[1:]) for s in specs}
            missing = [s for s in specs if not reusable_artifact(
                root / _safe(s[0]), sha, dense.config, builds[s[0]])]  # fmt: skip
            # one compress call per (correction, dtype), all on one pruned model
            groups: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
            for spec in missing:
                key = (spec[2] or cfg.corrections[0], spec[3] or factor_dtypes(cfg)[0])
                groups.setdefault(key, []).append(spec)
            pruned = None
            if groups:
                _say(f"prune {method} {pattern}: once, for {len(missing)} variants")
            for (correction, dtype), group in groups.items():
                needs_frames = method in ("wanda", "sparsegpt") or correction == "activation"
                if needs_frames and frames is None:
                    from vla_pruned_ros.training.collect import expert_frames

                    seeds = list(range(cfg.calib_scenes))
                    frames = {t: expert_frames(t, seeds) for t in dense.config.action_dims}
                ranks = list(dict.fromkeys(["0", *(s[1] for s in group)]))
                models = compress(
                    dense, method, pattern, ranks,
                    frames if needs_frames else None, cfg.include or None, cfg.exclude or None,
                    cfg.svd, dtype, progress, correction=correction, damp=cfg.damp,
                    calib_source=calib_source if correction == "activation" else "",
                    pruned=pruned, conv=cfg.conv,
                )  # fmt: skip
                pruned = models["0"]
                for name, rank, _, _ in group:
                    save_embedded_artifact(models[rank], root / _safe(name), source,
                                           overwrite=True, sweep_build=builds[name])  # fmt: skip
            for name, rank, correction, dtype in specs:
                folder = root / _safe(name)
                report, manifest = artifact_memory(
                    folder, load_embedded_artifact(folder, mode="packed")
                )
                fixed = int(rank) if rank.isdigit() else -1
                variants.append(Variant(name, method, fixed, str(folder), report, pattern,
                                        str(manifest["rank_policy"]), sha, conf,
                                        dense.config.action_gain, correction,
                                        dtype, loader, tensors_sha256(manifest),
                                        kernel_build(), cfg.conv))  # fmt: skip
    return variants


CellId = tuple[str, str, str]  # (variant name, task, phrasing)


def _cell_file(cfg: TableConfig, variant: Variant, task: str, phrasing: str
               ) -> tuple[Path, dict[str, Any], int]:  # fmt: skip
    """A cell's cache file, the key a cached cell must match, and its number of episodes;
    `phrasing='heldout'` is the first `heldout_phrasing` scenes with held-out instruction
    templates, cached separately."""
    episodes = cfg.episodes if phrasing == "train" else cfg.heldout_phrasing
    suffix = "" if phrasing == "train" else f"__{phrasing}"
    path = Path(cfg.cells_dir) / f"{_safe(variant.name)}__{task}{suffix}.json"
    key = {"variant": variant.name, "task": task, "episodes": episodes, "seed": cfg.seed,
           "model_sha256": variant.model_sha256,
           "config_sha256": variant.config_sha256,
           "action_gain": variant.action_gain.get(task, 1.0)}  # fmt: skip
    if phrasing != "train":
        key["phrasing"] = phrasing
    if variant.artifact_sha256:  # the exact build and what its pruned layers ran on
        key["artifact_sha256"] = variant.artifact_sha256
        key["runtime"] = variant.runtime
    if variant.loader:  # a checkpoint's adapter and options (none for the embedded VLA)
        key["loader"] = json.loads(json.dumps(variant.loader, sort_keys=True, default=str))
    return path, key, episodes


def table_cells(cfg: TableConfig, wanted: list[tuple[Variant, str, str]], progress: bool = True
                ) -> dict[CellId, dict[str, Any]]:  # fmt: skip
    """Every (variant, task, phrasing) cell: from its cache file when the key matches, else run
    with the others left (one parallel call, one progress bar) and saved as it finishes. A cell
    that failed is {"error": ...}."""
    out: dict[CellId, dict[str, Any]] = {}
    todo: dict[str, list[EvalJob]] = {}
    files: dict[str, tuple[CellId, Path, dict[str, Any]]] = {}
    for variant, task, phrasing in wanted:
        cid = (variant.name, task, phrasing)
        path, key, episodes = _cell_file(cfg, variant, task, phrasing)
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                out[cid] = cached
                continue
        name = " ".join(cid)
        model, fields = shared_model(variant.artifact), adapter_fields(variant.loader)
        todo[name] = [EvalJob(task, model, s, phrasing, **fields)
                      for s in heldout_seeds(cfg.seed, episodes)]  # fmt: skip
        files[name] = (cid, path, key)

    def save(name: str, cell: EpisodeCell) -> None:
        cid, path, key = files[name]
        if cell.error is not None:
            out[cid] = {"key": key, "error": cell.error}
            return
        out[cid] = {
            "key": key,
            "summary": summarize(cell.records),
            "episodes": [{k: r.get(k) for k in KEEP if k in r} for r in cell.records],
        }
        atomic_write(path, json.dumps(out[cid]))

    if todo:
        run_cells(todo, cfg.parallel(progress), f"{len(todo)} cells", save)
    return out


def failures(cells: dict[CellId, dict[str, Any]]) -> list[dict[str, str]]:
    """The failed cells, as the results JSON lists them."""
    return [{"variant": v, "task": t, "phrasing": p, "error": c["error"]}
            for (v, t, p), c in cells.items() if "error" in c]  # fmt: skip


def run_sweep(cfg: SweepConfig, progress: bool = True) -> dict[str, Any]:
    """The table. A variant with a failed cell is left out of `rows` and `variants` and listed
    under `failed` with the error; the rest of the table is complete."""
    variants = build_variants(cfg, progress)
    dense_bytes = variants[0].memory["total_bytes"]
    phrasings = ["train"] + (["heldout"] if cfg.heldout_phrasing > 0 else [])
    cells = table_cells(cfg, [(v, t, p) for v in variants for t in cfg.tasks for p in phrasings],
                        progress)  # fmt: skip
    failed = failures(cells)
    lost = {f["variant"] for f in failed}
    out, flat = [], []
    for variant in variants:
        if variant.name in lost:
            continue
        tasks = {}
        for task in cfg.tasks:
            cell = cells[(variant.name, task, "train")]
            summary = dict(cell["summary"])
            if cfg.heldout_phrasing > 0:
                summary["heldout_phrasing"] = cells[(variant.name, task, "heldout")]["summary"]
            tasks[task] = {"summary": summary, "episodes": cell["episodes"]}
            flat.append({
                "task": task, "variant": variant.name, "method": variant.method or "dense",
                "pattern": variant.pattern, "rank_policy": variant.rank_policy,
                "episodes": summary["episodes"], "success": summary["success"]["rate"],
                "unsafe_rate": summary["unsafe"]["rate"], "ci95": summary["success"]["ci95"],
                "unsafe_ci95": summary["unsafe"]["ci95"],
                "collisions_per_episode": summary["collisions_per_episode"],
                "heldout_phrasing_success": summary.get("heldout_phrasing", {}).get(
                    "success", {}).get("rate"),
                "artifact_bytes": variant.memory.get("artifact_bytes"),
                "model_bytes": variant.memory["total_bytes"], "dense_bytes": dense_bytes,
                "latency_ms": summary["latency_ms"]["p50"],
            })  # fmt: skip
        out.append({**dataclasses.asdict(variant), "tasks": tasks})
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": dataclasses.asdict(cfg),
        "model_sha256": variants[0].model_sha256 if variants else "",
        "action_gain": variants[0].action_gain if variants else {},
        "rows": flat,
        "variants": out,
        "failed": failed,
    }
