"""Divergence-guided structured pruning on the closed-loop harness: the paper's per-module probe
and the joint configurations against magnitude, Wanda and random unit removal, at equal numbers
of removed units (so equal parameter reduction), on the GLUESTICK table's scenes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_pruned_ros.evaluation.provenance import machine, machine_words
from vla_pruned_ros.evaluation.report import weights_note
from vla_pruned_ros.evaluation.sweep import (
    TableConfig,
    Variant,
    _safe,
    config_sha256,
    failures,
    reusable_artifact,
    source_weights,
    table_cells,
)
from vla_pruned_ros.params_file import params_dataclass

NODE = "vla_eval_divergence"


@dataclass
class DivergenceConfig(TableConfig):
    relative: bool = False
    probe_ratio: float = 0.5
    probe_modules: list[str] = field(default_factory=lambda: ["ffn", "heads"])
    criteria: list[str] = field(default_factory=lambda: ["divergence", "magnitude", "wanda",
                                                         "random"])  # fmt: skip
    configs: dict[str, dict[str, float]] = field(default_factory=dict)
    keep: str = "high"
    artifacts_dir: str = "runs/divergence/artifacts"
    json: str = "results/divergence.json"
    markdown: str = "docs/divergence.md"

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> DivergenceConfig:
        return params_dataclass(cls, path, NODE, overrides)


@dataclass(frozen=True)
class Plan:
    name: str  # "probe_ffn_high", "moderate_wanda", ...
    group: str  # "probe" or the configuration name
    criterion: str
    modules: dict[str, dict[str, Any]]  # module -> {ratio, keep}


def plans(cfg: DivergenceConfig) -> list[Plan]:
    out = []
    for module in cfg.probe_modules:
        for keep in ("high", "low"):
            out.append(Plan(f"probe_{module}_{keep}", "probe", "divergence",
                            {module: {"ratio": cfg.probe_ratio, "keep": keep}}))  # fmt: skip
    for name, ratios in cfg.configs.items():
        for criterion in cfg.criteria:
            keep = cfg.keep if criterion == "divergence" else "high"
            modules = {m: {"ratio": float(r), "keep": keep} for m, r in ratios.items() if r}
            out.append(Plan(f"{name}_{criterion}", name, criterion, modules))
    return out


def text_latency_ms(model: Any, repeats: int = 30) -> float:
    """Median time of one instruction through the language transformer (what structured removal
    speeds up; the policy caches text features, so per-step latency barely moves)."""
    import statistics
    import time

    import torch

    from vla_pruned_ros.models.embedded import load_tokenizer

    enc = load_tokenizer()(["push the green block onto the target"], model.config.max_text_tokens)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            start = time.perf_counter()
            model.encode_text(enc["input_ids"], enc["attention_mask"])
            if i >= 3:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def build(cfg: DivergenceConfig, progress: bool = True) -> list[tuple[Plan | None, Variant]]:
    """Dense plus one structured artifact per plan (reused when it already verifies)."""
    from tqdm import tqdm

    from vla_pruned_ros.compression import memory_report, read_manifest
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import (
        load_embedded_artifact,
        save_embedded_artifact,
        structured_prune,
    )

    source, sha = source_weights(cfg.model)
    dense = load_embedded(source)
    conf = config_sha256(dense.config)
    out: list[tuple[Plan | None, Variant]] = [
        (None, Variant("dense", "", -1, cfg.model,
                       {**memory_report(dense, value_bytes=2),
                        "text_ms": text_latency_ms(dense)}, model_sha256=sha,
                       config_sha256=conf, action_gain=dense.config.action_gain))
    ]  # fmt: skip
    frames = None
    for plan in tqdm(plans(cfg), desc="structured artifacts", disable=not progress):
        folder = Path(cfg.artifacts_dir) / _safe(plan.name)
        if not reusable_artifact(folder, sha, dense.config):
            if plan.criterion == "wanda" and frames is None:
                from vla_pruned_ros.training.collect import expert_frames

                seeds = list(range(cfg.calib_scenes))
                frames = {t: expert_frames(t, seeds) for t in dense.config.action_dims}
            model, structure = structured_prune(
                dense, plan.modules, plan.criterion, cfg.relative, frames, cfg.seed
            )
            save_embedded_artifact(model, folder, source, overwrite=True, structure=structure,
                                   method=f"units-{plan.criterion}")  # fmt: skip
        model = load_embedded_artifact(folder)
        report = memory_report(model, value_bytes=2)
        report["structure"] = read_manifest(folder, verify=False)["structure"]
        report["text_ms"] = text_latency_ms(model)
        out.append((plan, Variant(plan.name, plan.criterion, -1, str(folder), report,
                                  model_sha256=sha, config_sha256=conf,
                                  action_gain=dense.config.action_gain)))  # fmt: skip
    return out


def run(cfg: DivergenceConfig, progress: bool = True) -> dict[str, Any]:
    """The table; every cell through the sweep's run loop (cached, parallel). A variant with a
    failed cell is left out and listed under `failed`."""
    rows = []
    built = build(cfg, progress)
    cells = table_cells(cfg, [(v, t, "train") for _, v in built for t in cfg.tasks], progress)
    failed = failures(cells)
    lost = {f["variant"] for f in failed}
    for plan, variant in built:
        if variant.name in lost:
            continue
        tasks = {t: {"summary": cells[(variant.name, t, "train")]["summary"]} for t in cfg.tasks}
        structure = variant.memory.pop("structure", None) or {}
        rows.append({
            "name": variant.name,
            "group": plan.group if plan else "dense",
            "criterion": plan.criterion if plan else "",
            "modules": plan.modules if plan else {},
            "removed": structure.get("removed", {}),
            "params": structure.get("params", variant.memory["params_dense"]),
            "params_dense": structure.get("params_dense", variant.memory["params_dense"]),
            "memory": variant.memory,
            "artifact": variant.artifact,
            "tasks": tasks,
        })  # fmt: skip
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": dataclasses.asdict(cfg),
        "model_sha256": built[0][1].model_sha256,
        "action_gain": built[0][1].action_gain,
        "variants": rows,
        "failed": failed,
    }


def _rate(summary: dict, key: str) -> str:
    block = summary[key]
    lo, hi = block["ci95"]
    return f"{block['rate']:.1%} ({lo:.0%}-{hi:.0%})"


def markdown(result: dict[str, Any], command: str) -> str:
    cfg = result["config"]
    tasks = cfg["tasks"]
    head = ["variant", "removed (FFN ch. / heads)", "params (M)", "MB (fp16)",
            "instruction ms"]  # fmt: skip
    for t in tasks:
        head += [f"{t} success", f"{t} unsafe"]
    lines = [
        "# Recovery-free structured pruning guided by adaptation divergence",
        "",
        f"Made by `{command}` on {result['created']} ({machine_words(result['machine'])}). "
        f"Model: `{cfg['model']}`{weights_note(result)}. "
        f"Units of the embedded VLA's language transformer (MiniLM, 6 layers x 1536 FFN channels "
        f"and 12 heads) are removed physically; divergence is ||W_vla - W_vlm|| against the "
        f"original MiniLM weights{' divided by ||W_vlm||' if cfg['relative'] else ''}. "
        f"{cfg['episodes']} held-out scenes per task, the same as the GLUESTICK table; rates "
        "with 95 % Wilson intervals. No recovery of any kind after removal. Instruction ms: median "
        "time of one instruction through the (pruned) language transformer on this CPU; the "
        "policy caches text features per instruction, so per-frame latency barely changes.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for v in result["variants"]:
        removed = v["removed"]
        cells = [v["name"], f"{removed.get('ffn', 0)} / {removed.get('heads', 0)}",
                 f"{v['params'] / 1e6:.2f}", f"{v['memory']['total_bytes'] / 1e6:.1f}",
                 f"{v['memory']['text_ms']:.2f}"]  # fmt: skip
        for t in tasks:
            s = v["tasks"][t]["summary"]
            cells += [_rate(s, "success"), _rate(s, "unsafe")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Where GLUESTICK fits: it corrects a layer whose weight was sparsified by adding "
        "A (B x) for the removed weights' gap. Structured removal deletes the FFN channels and "
        "heads themselves, so the activations the gap would read are no longer computed; "
        "GLUESTICK applies only on top of the remaining, still dense layers if those are then "
        "sparsified (e.g. 2:4 on the surviving projections), not to the removed units.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["config"]["tasks"]
    variants = result["variants"]
    dense = next(v for v in variants if v["group"] == "dense")
    probe = [v for v in variants if v["group"] == "probe"]
    joint = [v for v in variants if v["group"] not in ("dense", "probe")]
    fig, axes = plt.subplots(1, 2 * len(tasks), figsize=(5 * 2 * len(tasks), 4))
    for ti, task in enumerate(tasks):
        ax = axes[2 * ti]
        names = [v["name"].removeprefix("probe_") for v in probe]
        rates = [v["tasks"][task]["summary"]["success"]["rate"] for v in probe]
        ax.bar(names, rates, color=["tab:blue" if n.endswith("high") else "tab:orange"
                                    for n in names])  # fmt: skip
        ax.axhline(dense["tasks"][task]["summary"]["success"]["rate"], color="gray", label="dense")
        ax.set(title=f"{task}: probe (keep high vs low divergence)", ylim=(0, 1.02),
               ylabel="success rate")  # fmt: skip
        ax.legend(fontsize=8)
        ax = axes[2 * ti + 1]
        for criterion in result["config"]["criteria"]:
            rows = sorted((v for v in joint if v["criterion"] == criterion),
                          key=lambda v: v["params"], reverse=True)  # fmt: skip
            ax.plot([1 - v["params"] / v["params_dense"] for v in rows],
                    [v["tasks"][task]["summary"]["success"]["rate"] for v in rows],
                    marker="o", label=criterion)  # fmt: skip
        ax.axhline(dense["tasks"][task]["summary"]["success"]["rate"], color="gray")
        ax.set(title=f"{task}: equal removal, by criterion", ylim=(0, 1.02),
               xlabel="share of parameters removed", ylabel="success rate")  # fmt: skip
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "divergence.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
