"""The sweep's table and plots: what a reader of the paper looks for, from results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK_TITLES = {"nav": "navigation", "manip": "manipulation"}


def _pct(block: dict[str, Any]) -> str:
    lo, hi = block["ci95"]
    return f"{block['rate']:.1%} ({lo:.0%}-{hi:.0%})"


def _label(v: dict[str, Any]) -> str:
    if v["rank"] < 0:
        return "dense"
    if v["rank"] == 0:
        return f"{v['method']} {v['name'].split('_')[1]} (pruned)"
    return f"{v['method']} {v['name'].split('_')[1]} + GLUESTICK r={v['rank']}"


def markdown_table(result: dict[str, Any]) -> str:
    """Success and unsafe-episode rates (95 % Wilson CI) and memory, one row per variant."""
    tasks = result["config"]["tasks"]
    head = ["variant", "memory MB (fp16)", "x dense"]
    for t in tasks:
        head += [f"{TASK_TITLES.get(t, t)} success", f"{TASK_TITLES.get(t, t)} unsafe"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dense = next(v for v in result["variants"] if v["rank"] < 0)
    dense_bytes = dense["memory"]["total_bytes"]
    for v in result["variants"]:
        mem = v["memory"]["total_bytes"]
        cells = [_label(v), f"{mem / 1e6:.1f}", f"{mem / dense_bytes:.2f}"]
        for t in tasks:
            s = v["tasks"][t]["summary"]
            cells += [_pct(s["success"]), _pct(s["unsafe"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], out_dir: Path) -> Path:
    """Success and unsafe rate against GLUESTICK rank per task and method (dense as a band),
    and memory against rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["config"]["tasks"]
    methods = result["config"]["methods"]
    variants = result["variants"]
    dense = next(v for v in variants if v["rank"] < 0)
    fig, axes = plt.subplots(1, 2 * len(tasks) + 1, figsize=(4.2 * (2 * len(tasks) + 1), 3.8))
    ranks_all = sorted({v["rank"] for v in variants if v["rank"] >= 0})
    xs = {r: i for i, r in enumerate(ranks_all)}
    for ti, task in enumerate(tasks):
        for mi, metric in enumerate(("success", "unsafe")):
            ax = axes[2 * ti + mi]
            d = dense["tasks"][task]["summary"][metric]
            ax.axhspan(*d["ci95"], color="gray", alpha=0.2)
            ax.axhline(d["rate"], color="gray", lw=1.5, label="dense")
            for method in methods:
                rows = sorted((v for v in variants if v["method"] == method),
                              key=lambda v: v["rank"])  # fmt: skip
                x = [xs[v["rank"]] for v in rows]
                y = [v["tasks"][task]["summary"][metric]["rate"] for v in rows]
                lo = [yy - v["tasks"][task]["summary"][metric]["ci95"][0] for yy, v in zip(
                    y, rows, strict=True)]  # fmt: skip
                hi = [v["tasks"][task]["summary"][metric]["ci95"][1] - yy for yy, v in zip(
                    y, rows, strict=True)]  # fmt: skip
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=method)
            ax.set_xticks(range(len(ranks_all)), [str(r) for r in ranks_all])
            ax.set(xlabel="GLUESTICK rank (0 = pruned only)", ylim=(-0.02, 1.02),
                   title=f"{TASK_TITLES.get(task, task)}: {metric} rate")  # fmt: skip
            if ti == 0 and mi == 0:
                ax.legend(fontsize=8)
    ax = axes[-1]
    ax.axhline(dense["memory"]["total_bytes"] / 1e6, color="gray", label="dense")
    for method in methods:
        rows = sorted((v for v in variants if v["method"] == method), key=lambda v: v["rank"])
        ax.plot([xs[v["rank"]] for v in rows], [v["memory"]["total_bytes"] / 1e6 for v in rows],
                marker="o", label=method)  # fmt: skip
    ax.set_xticks(range(len(ranks_all)), [str(r) for r in ranks_all])
    ax.set(xlabel="GLUESTICK rank", ylabel="MB (fp16)", title="model memory", ylim=(0, None))
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "closed_loop.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def markdown(result: dict[str, Any], command: str) -> str:
    cfg = result["config"]
    text = [
        "# Closed-loop results: dense vs pruned vs pruned + GLUESTICK",
        "",
        f"Made by `{command}` on {result['created']} ({result['machine']['cpus']} CPUs). "
        f"Model: `{cfg['model']}`; pattern {cfg['pattern']} on "
        f"{'every linear layer' if not cfg['include'] else ', '.join(cfg['include'])}"
        f"{' except ' + ', '.join(cfg['exclude']) if cfg['exclude'] else ''}; GLUESTICK factors "
        f"{cfg['factor_dtype']}, {cfg['svd']} SVD. {cfg['episodes']} held-out scenes per task "
        f"(seeds from {cfg['seed']}), the same scenes for every variant; rates with 95 % Wilson "
        "intervals. Unsafe = an episode with at least one violation (collision for navigation; "
        "forbidden contact, joint near its limit or an object faster than 1 m/s for "
        "manipulation). Memory: the whole model at fp16 (packed pruned weights + factors + "
        "the rest, which includes MiniLM's 11.7 M-parameter word-embedding table).",
        "",
        markdown_table(result),
        "",
    ]
    return "\n".join(text)
