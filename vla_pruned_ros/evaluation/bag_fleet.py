"""Offline replay of many bags (a list, or folders of bags) as parallel work items, one bag per
item (evaluation/parallel.py), into one combined report: per bag what `evaluate_bag` gives, and
per model the totals over every bag."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vla_pruned_ros.evaluation.parallel import Parallel, Work, run

BAG_FILES = (".mcap", ".db3")


def is_bag(path: Path) -> bool:
    """A rosbag2 folder (metadata.yaml or storage files directly inside) or a storage file."""
    if path.is_file():
        return path.suffix in BAG_FILES
    if not path.is_dir():
        return False
    return (path / "metadata.yaml").is_file() or any(
        p.suffix in BAG_FILES for p in path.iterdir() if p.is_file()
    )


def bag_paths(paths: list[Path]) -> list[Path]:
    """Each path as given if it is a bag, else the bags inside the folder (sorted, one level),
    in order. Raises FileNotFoundError for a path that is neither."""
    out: list[Path] = []
    for path in paths:
        if is_bag(path):
            out.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if is_bag(p)) if path.is_dir() else []
        if not inside:
            raise FileNotFoundError(f"{path} is neither a bag nor a folder of bags")
        out.extend(inside)
    return out


def replay_one(bag: Path, models: list[str], task: str | None, reference: str | None,
               loader_kwargs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One work item: `evaluate_bag` with the adapter arguments every model loads with."""
    from vla_pruned_ros.evaluation.bag_replay import evaluate_bag, replay_loader

    return evaluate_bag(bag, models, task, reference, progress=False,
                        loader=replay_loader(loader_kwargs))  # fmt: skip


def replay_bags(bags: list[Path], models: list[str], task: str | None = None,
                reference: str | None = None, loader_kwargs: dict[str, Any] | None = None,
                options: Parallel | None = None) -> dict[str, Any]:  # fmt: skip
    """Every bag through every model, bags side by side; a bag that cannot be read is listed
    under `failed` with its error and the others still report."""
    models = [_shared(m) for m in models]
    reference = _shared(reference) if reference else None
    work = [Work(str(b), replay_one, (_shared_path(b), models, task, reference,
                                      dict(loader_kwargs or {})))
            for b in bags]  # fmt: skip
    outcomes = run(work, options or Parallel(), "bags")
    results = [o.results[0] for o in outcomes.values() if not o.failed]
    failed = {name: o.error for name, o in outcomes.items() if o.failed}
    return combine(results, failed)


def _shared(model: str) -> str:
    from vla_pruned_ros.evaluation.closed_loop import shared_model

    return shared_model(model)


def _shared_path(path: Path) -> Path:
    return path.expanduser().resolve()


def combine(results: list[dict[str, Any]], failed: dict[str, str]) -> dict[str, Any]:
    """Totals per model over the bags: step-weighted means, summed violations, and the real-time
    factor of all recorded seconds over all model seconds."""
    models: dict[str, dict[str, Any]] = {}
    for result in results:
        for name, m in result["models"].items():
            total = models.setdefault(name, {"steps": 0, "bags": 0, "model_seconds": 0.0,
                                             "bag_seconds": 0.0, "command_violations": {},
                                             "_sums": {}})  # fmt: skip
            total["bags"] += 1
            total["steps"] += m["steps"]
            total["model_seconds"] += m["model_seconds"]
            total["bag_seconds"] += result["bag_seconds"]
            for c, n in m["command_violations"].items():
                total["command_violations"][c] = total["command_violations"].get(c, 0) + n
            for block in ("vs_recorded", "vs_reference"):
                for key, value in m[block].items():
                    if not math.isnan(value):
                        sums = total["_sums"].setdefault((block, key), [0.0, 0])
                        sums[0] += value * m["steps"]
                        sums[1] += m["steps"]
    for total in models.values():
        sums = total.pop("_sums")
        for block in ("vs_recorded", "vs_reference"):
            keys = [k for b, k in sums if b == block]
            total[block] = {k: sums[(block, k)][0] / max(1, sums[(block, k)][1]) for k in keys}
        seconds = total["model_seconds"]
        total["realtime_factor"] = total["bag_seconds"] / seconds if seconds > 0 else math.inf
    errors = [f"{r['bag']}: {r['error']}" for r in results if r.get("error")]
    errors += [f"{bag}: {err}" for bag, err in failed.items()]
    return {"bags": results, "failed": failed, "models": models,
            "error": "; ".join(errors) or None}  # fmt: skip


def markdown(combined: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The totals table, then each bag's own report (bag_report.markdown) with its plot."""
    from vla_pruned_ros.evaluation.bag_report import markdown as bag_markdown

    bags = combined["bags"]
    lines = [
        f"# Offline replay of {len(bags) + len(combined['failed'])} bags",
        "",
        "| model | bags | steps | MSE vs recorded | direction agrees | MSE vs reference "
        "| command violations | x real time |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, m in combined["models"].items():
        viol = ", ".join(f"{k} {v}" for k, v in m["command_violations"].items()) or "none"
        rec, ref = m["vs_recorded"], m["vs_reference"]
        lines.append(
            f"| `{name}` | {m['bags']} | {m['steps']} | {rec.get('mse', math.nan):.4f} | "
            f"{rec.get('direction_agreement', math.nan):.1%} | {ref.get('mse', math.nan):.4f} | "
            f"{viol} | {m['realtime_factor']:.0f} |"
        )
    lines.append("")
    for bag, err in combined["failed"].items():
        lines += [f"**Failed:** `{bag}`: {err}", ""]
    for result in bags:
        text = bag_markdown(result).replace("\n# ", "\n## ")
        lines += ["#" + text if text.startswith("# ") else text]
        if plots and result["bag"] in plots:
            lines += [f"![replay]({plots[result['bag']]})", ""]
    return "\n".join(lines)
