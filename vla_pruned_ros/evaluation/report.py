"""The sweep's table and plots: what a reader of the paper looks for, from results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_pruned_ros.evaluation.provenance import machine_words

TASK_TITLES = {"nav": "navigation", "manip": "manipulation"}


def _pct(block: dict[str, Any]) -> str:
    lo, hi = block["ci95"]
    return f"{block['rate']:.1%} ({lo:.0%}-{hi:.0%})"


def _is_dense(v: dict[str, Any]) -> bool:
    return not v["method"]


def _pattern(v: dict[str, Any]) -> str:
    """What a variant was pruned to, as tables group it: the pattern, and whether the vision
    convolutions were pruned too (a sweep with `conv`), since the two regimes never share a
    pruned model, a line or a panel."""
    pattern = v.get("pattern") or (v["name"].split("_")[1] if "_" in v["name"] else "")
    return pattern + (" + convs" if v.get("conv") else "")


def _label(v: dict[str, Any]) -> str:
    if _is_dense(v):
        return "dense"
    pattern = _pattern(v)
    policy = v.get("rank_policy") or f"rank:{v['rank']}"
    if policy in ("rank:0", "0"):
        return f"{v['method']} {pattern} (pruned)"
    kind, _, value = policy.partition(":")
    knob = {"rank": f"r={value}", "energy": f"energy {value}", "budget": f"budget {value}",
            "activation-budget": f"activation-budget {value}"}  # fmt: skip
    extra = [x for x in (v.get("correction") or "svd", v.get("factor_dtype") or "float16")
             if x not in ("svd", "float16")]  # fmt: skip
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{v['method']} {pattern} + GLUESTICK {knob.get(kind, policy)}{tail}"


def _line(v: dict[str, Any]) -> tuple[str, str, str, str]:
    """A plot line: method, pattern, correction and factor dtype (the pruned model, rank 0,
    starts every line of its method and pattern)."""
    return (v["method"], _pattern(v), v.get("correction") or "svd",
            v.get("factor_dtype") or "float16")  # fmt: skip


def _dtypes(cfg: dict[str, Any]) -> str:
    dtype = cfg["factor_dtype"]
    return dtype if isinstance(dtype, str) else " / ".join(dtype)


def _ms(summary: dict[str, Any]) -> str:
    return f"{summary['latency_ms']['p50']:.2f}"


def markdown_table(result: dict[str, Any]) -> str:
    """One table per task: success and unsafe-episode rates (95 % Wilson CI), collisions,
    held-out phrasing success, model and artifact memory, step latency; one row per variant."""
    variants = result["variants"]
    dense_bytes = next(v for v in variants if _is_dense(v))["memory"]["total_bytes"]
    blocks = []
    for task in result["config"]["tasks"]:
        head = ["variant", "model MB (fp16)", "x dense", "artifact MB", "success", "unsafe",
                "collisions/ep", "held-out phrasing success", "step ms p50"]  # fmt: skip
        lines = [f"### {TASK_TITLES.get(task, task)}", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
        for v in variants:
            s = v["tasks"][task]["summary"]
            mem = v["memory"]["total_bytes"]
            art = v["memory"].get("artifact_bytes")
            held = s.get("heldout_phrasing", {}).get("success")
            cells = [_label(v), f"{mem / 1e6:.1f}", f"{mem / dense_bytes:.2f}",
                     f"{art / 1e6:.1f}" if art else "-", _pct(s["success"]), _pct(s["unsafe"]),
                     f"{s['collisions_per_episode']:.2f}",
                     f"{held['rate']:.0%} (n={s['heldout_phrasing']['episodes']})" if held
                     else "-", _ms(s)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot(result: dict[str, Any], out_dir: Path) -> Path:
    """Per task: success and unsafe rate against the fixed GLUESTICK rank (one line per method
    and pattern, dense as a band), and success against model memory for every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["config"]["tasks"]
    variants = result["variants"]
    dense = next(v for v in variants if _is_dense(v))
    fixed = [v for v in variants if not _is_dense(v) and v["rank"] >= 0]
    ranks_all = sorted({v["rank"] for v in fixed})
    xs = {r: i for i, r in enumerate(ranks_all)}
    groups = sorted({_line(v) for v in fixed if v["rank"] > 0} or {_line(v) for v in fixed})
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 3.8 * len(tasks)), squeeze=False)
    for ti, task in enumerate(tasks):
        for mi, metric in enumerate(("success", "unsafe")):
            ax = axes[ti][mi]
            d = dense["tasks"][task]["summary"][metric]
            ax.axhspan(*d["ci95"], color="gray", alpha=0.2)
            ax.axhline(d["rate"], color="gray", lw=1.5, label="dense")
            for group in groups:
                rows = sorted((v for v in fixed if _line(v) == group
                               or (v["rank"] == 0 and _line(v)[:2] == group[:2])),
                              key=lambda v: v["rank"])  # fmt: skip
                blocks = [v["tasks"][task]["summary"][metric] for v in rows]
                y = [b["rate"] for b in blocks]
                err = [[yy - b["ci95"][0] for yy, b in zip(y, blocks, strict=True)],
                       [b["ci95"][1] - yy for yy, b in zip(y, blocks, strict=True)]]  # fmt: skip
                ax.errorbar(
                    [xs[v["rank"]] for v in rows],
                    y,
                    yerr=err,
                    marker="o",
                    capsize=3,
                    label=" ".join(x for x in group if x not in ("svd", "float16")),
                )
            ax.set_xticks(range(len(ranks_all)), [str(r) for r in ranks_all])
            ax.set(xlabel="GLUESTICK rank (0 = pruned only)", ylim=(-0.02, 1.02),
                   title=f"{TASK_TITLES.get(task, task)}: {metric} rate")  # fmt: skip
            if mi == 0:
                ax.legend(fontsize=7)
        ax = axes[ti][2]
        for v in variants:
            s = v["tasks"][task]["summary"]["success"]
            ax.scatter(v["memory"]["total_bytes"] / 1e6, s["rate"], s=18,
                       color="black" if _is_dense(v) else None)  # fmt: skip
        ax.set(
            xlabel="model MB (fp16)",
            ylabel="success rate",
            ylim=(-0.02, 1.02),
            title=f"{TASK_TITLES.get(task, task)}: success vs memory (all variants)",
        )
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "closed_loop.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def weights_note(result: dict[str, Any]) -> str:
    """Which dense weights (and calibrated action gains) a table is about, so a table and a
    retrained or recalibrated model are not confused."""
    sha = result.get("model_sha256")
    gains = result.get("action_gain")
    if gains is None and result.get("variants"):
        gains = result["variants"][0].get("action_gain")
    gain = ", ".join(f"{t} {g:g}" for t, g in sorted((gains or {}).items()))
    gain = f"; action gain {gain}" if gain else ""
    return f" (weights sha256 {sha[:12]}{gain})" if sha else ""


def memory_note(result: dict[str, Any]) -> str:
    """What the memory column counts. MiniLM's word-embedding table is part of the embedded
    VLA only; a table on a user's checkpoint (its variants load through an adapter other than
    the embedded one) must not be told it is in there."""
    adapters = {(v.get("loader") or {}).get("adapter", "embedded") or "embedded"
                for v in result.get("variants", [])}  # fmt: skip
    rest = "the rest"
    if adapters <= {"embedded"}:
        rest += ", which includes MiniLM's 11.7 M-parameter word-embedding table"
    return f"Memory: the whole model at fp16 (packed pruned weights + factors + {rest})."


def markdown(result: dict[str, Any], command: str) -> str:
    cfg = result["config"]
    text = [
        "# Closed-loop results: dense vs pruned vs pruned + GLUESTICK",
        "",
        f"Made by `{command}` on {result['created']} ({machine_words(result['machine'])}). "
        f"Model: `{cfg['model']}`{weights_note(result)}; patterns {', '.join(cfg['patterns'])} on "
        f"{'every linear layer' if not cfg['include'] else ', '.join(cfg['include'])}"
        f"{' except ' + ', '.join(cfg['exclude']) if cfg['exclude'] else ''}; GLUESTICK factors "
        f"{_dtypes(cfg)}, {cfg['svd']} SVD. {cfg['episodes']} held-out scenes per task "
        f"(seeds from {cfg['seed']}), the same scenes for every variant, plus the first "
        f"{cfg['heldout_phrasing']} with held-out instruction templates; rates with 95 % Wilson "
        "intervals. Unsafe = an episode with at least one violation (collision for navigation; "
        "forbidden contact, joint near its limit or an object faster than 1 m/s for "
        f"manipulation). {memory_note(result)}",
        "",
        "## Does it reproduce the paper?",
        "",
        *findings(result),
        "",
        markdown_table(result),
        "",
    ]
    return "\n".join(text)


def findings(result: dict[str, Any]) -> list[str]:
    """The paper's claims checked on these numbers, one bullet per task and method/pattern:
    how far pruning drops success below dense, and how much of the drop the best GLUESTICK row
    of at most dense memory wins back, with the unsafe rates alongside."""
    variants = result["variants"]
    dense = next(v for v in variants if _is_dense(v))
    dense_mem = dense["memory"]["total_bytes"]
    lines = []
    for task in result["config"]["tasks"]:
        d = dense["tasks"][task]["summary"]
        groups = sorted({(v["method"], _pattern(v)) for v in variants if not _is_dense(v)})
        for method, pattern in groups:
            rows = [v for v in variants if (v["method"], _pattern(v)) == (method, pattern)]
            pruned = next((v for v in rows if v.get("rank_policy") in ("rank:0", "0")
                           or v["rank"] == 0), None)  # fmt: skip
            fixes = [v for v in rows if v is not pruned and v["memory"]["total_bytes"] <= dense_mem]
            if pruned is None:
                continue
            p = pruned["tasks"][task]["summary"]
            text = (
                f"- {TASK_TITLES.get(task, task)}, {method} {pattern}: success "
                f"{d['success']['rate']:.1%} dense -> {p['success']['rate']:.1%} pruned "
                f"(unsafe {d['unsafe']['rate']:.1%} -> {p['unsafe']['rate']:.1%})"
            )
            if fixes:
                best = max(fixes, key=lambda v: v["tasks"][task]["summary"]["success"]["rate"])
                b = best["tasks"][task]["summary"]
                drop = d["success"]["rate"] - p["success"]["rate"]
                won = b["success"]["rate"] - p["success"]["rate"]
                share = f", {won / drop:.0%} of the drop recovered" if drop > 0.02 else ""
                text += (
                    f"; best correction within dense memory: {_label(best)} at "
                    f"{best['memory']['total_bytes'] / dense_mem:.2f}x, "
                    f"{b['success']['rate']:.1%} (unsafe {b['unsafe']['rate']:.1%}){share}"
                )
            lines.append(text + ".")
    return lines


def merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One table from several sweep results over the same dense weights and scenes (the main
    table's svd rows beside a correction sweep's, a navigation run beside a manipulation
    one): variants united by name, each with every task any part ran for it (the first part's
    cell where two parts hold the same one), tasks united in order, the first part's config
    kept. Parts about other weights, episodes or scenes are refused, and so are parts from
    another kind of machine (`provenance`: the same seeds give other episodes there)."""
    first = parts[0]
    machine_keys = ("cpu", "torch_cpu_capability")
    for part in parts[1:]:
        for key in machine_keys:
            mine = part.get("machine", {}).get(key)
            theirs = first.get("machine", {}).get(key)
            if mine != theirs:
                raise ValueError(f"results ran on other machines ({key}: {mine!r} vs "
                                 f"{theirs!r}): their episodes are not comparable")  # fmt: skip
        if part.get("model_sha256") != first.get("model_sha256"):
            raise ValueError(f"results differ in model_sha256: {part.get('model_sha256')} vs "
                             f"{first.get('model_sha256')}")  # fmt: skip
        for key in ("episodes", "seed"):
            if part["config"][key] != first["config"][key]:
                raise ValueError(f"results differ in {key}: {part['config'][key]} vs "
                                 f"{first['config'][key]}")  # fmt: skip
    seen: dict[str, dict[str, Any]] = {}
    tasks: list[str] = []
    for part in parts:
        tasks += [t for t in part["config"]["tasks"] if t not in tasks]
        for v in part["variants"]:
            if v["name"] not in seen:
                seen[v["name"]] = {**v, "tasks": dict(v["tasks"])}
            else:
                held = seen[v["name"]]["tasks"]
                held.update({t: c for t, c in v["tasks"].items() if t not in held})
    rows = [r for part in parts for r in part.get("rows", [])]
    unique = {(r["task"], r["variant"]): r for r in reversed(rows)}  # the first part's wins
    return {**first, "config": {**first["config"], "tasks": tasks},
            "variants": list(seen.values()),
            "rows": [unique[k] for k in dict.fromkeys((r["task"], r["variant"]) for r in rows)],
            "failed": [f for part in parts for f in part.get("failed", [])]}  # fmt: skip


def _with_task(variants: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [v for v in variants if task in v["tasks"]]


def correction_bytes(v: dict[str, Any], variants: list[dict[str, Any]]) -> int:
    """What a variant's correction costs as stored: its artifact's bytes beyond the plain pruned
    model's of the same method and pattern (factors at their own dtype; 0 for that model)."""
    pruned = next(p for p in variants if p["method"] == v["method"]
                  and _pattern(p) == _pattern(v) and p["rank"] == 0)  # fmt: skip
    return v["memory"]["artifact_bytes"] - pruned["memory"]["artifact_bytes"]


def _corrected(result: dict[str, Any], task: str | None = None) -> list[dict[str, Any]]:
    """The pruned and corrected variants (those run on `task`, given one)."""
    found = [v for v in result["variants"] if not _is_dense(v)]
    return found if task is None else _with_task(found, task)


def correction_markdown(result: dict[str, Any]) -> str:
    """Per task: each pruned and corrected variant with its correction, factor dtype, stored
    correction bytes and success / unsafe rates (95 % Wilson intervals), dense first."""
    variants = result["variants"]
    dense = next(v for v in variants if _is_dense(v))
    blocks = []
    for task in result["config"]["tasks"]:
        head = ["variant", "correction", "factors", "correction kB", "success", "unsafe"]
        d = dense["tasks"][task]["summary"]
        lines = [f"### {TASK_TITLES.get(task, task)} ({d['episodes']} episodes per row)", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                 f"| dense | - | - | - | {_pct(d['success'])} | {_pct(d['unsafe'])} |"]  # fmt: skip
        rows = sorted(_corrected(result, task), key=lambda v: (v["method"], _pattern(v),
                      correction_bytes(v, variants), v.get("correction") or ""))  # fmt: skip
        for v in rows:
            s = v["tasks"][task]["summary"]
            corrected = v["rank"] != 0
            cells = [_label(v), (v.get("correction") or "svd") if corrected else "-",
                     (v.get("factor_dtype") or "float16") if corrected else "-",
                     f"{correction_bytes(v, variants) / 1e3:.0f}", _pct(s["success"]),
                     _pct(s["unsafe"])]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _point(v: dict[str, Any], task: str, variants: list[dict[str, Any]]
           ) -> tuple[float, float, list[float]]:  # fmt: skip
    """A plot point: correction kB, success rate, and the rate's distance to its interval."""
    block = v["tasks"][task]["summary"]["success"]
    rate = block["rate"]
    return (correction_bytes(v, variants) / 1e3, rate,
            [rate - block["ci95"][0], block["ci95"][1] - rate])  # fmt: skip


def correction_plot(result: dict[str, Any], out: Path) -> Path:
    """Success against stored correction bytes: a panel per task and pattern, a line per method,
    correction and factor dtype over the fixed ranks (from the pruned model at 0), a star per
    budget policy, 95 % Wilson intervals, dense as a band. Colour: method and correction;
    line: factor dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    dense = next(v for v in variants if _is_dense(v))
    panels = [
        (task, pattern)
        for task in result["config"]["tasks"]
        for pattern in dict.fromkeys(_pattern(v) for v in _corrected(result, task))
    ]
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.4 * rows), squeeze=False)
    colours: dict[tuple[str, str], str] = {}
    for ax, (task, pattern) in zip(axes.flat, panels, strict=False):  # spare panels hidden below
        d = dense["tasks"][task]["summary"]["success"]
        ax.axhspan(*d["ci95"], color="gray", alpha=0.2)
        ax.axhline(d["rate"], color="gray", lw=1.5, label="dense")
        here = [v for v in _corrected(result, task) if _pattern(v) == pattern]

        for line in sorted({_line(v) for v in here if v["rank"] != 0}):
            colour = colours.setdefault(line[::2], f"C{len(colours) % 10}")
            fixed = sorted((v for v in here if v["rank"] >= 0 and (_line(v) == line or (
                v["rank"] == 0 and _line(v)[0] == line[0]))),
                key=lambda v: correction_bytes(v, variants))  # fmt: skip
            label = " ".join(x for x in (line[0], line[2], line[3]) if x != "float16")
            if len(fixed) > 1:
                x, y, err = zip(*(_point(v, task, variants) for v in fixed), strict=True)
                ax.errorbar(x, y, yerr=list(zip(*err, strict=True)), marker="o", capsize=3,
                            color=colour, ls="-" if line[3] == "float16" else ":",
                            label=label)  # fmt: skip
                for xx, yy, v in zip(x, y, fixed, strict=True):
                    if v["rank"] > 0:
                        ax.annotate(f"r{v['rank']}", (xx, yy), fontsize=7, xytext=(3, -9),
                                    textcoords="offset points")  # fmt: skip
            for v in (v for v in here if v["rank"] < 0 and _line(v) == line):
                xx, yy, err = _point(v, task, variants)
                ax.errorbar([xx], [yy], yerr=[[err[0]], [err[1]]], marker="*", ms=12,
                            capsize=3, color=colour, ls="none",
                            label=f"{label} budget {v['rank_policy'].split(':')[-1]}")  # fmt: skip
        ax.set_xscale("symlog", linthresh=50)  # the pruned model at 0, ranks logarithmic
        ax.set(xlabel="stored correction kB (0 = pruned only)", ylabel="success rate",
               ylim=(-0.02, 1.02), title=f"{TASK_TITLES.get(task, task)}, {pattern}")  # fmt: skip
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# A results page mixes the generated table with what people wrote about it (docs/results.md: the
# correction section, the spot check). Rewriting the table must not erase that.
HAND_WRITTEN_MARK = (
    "<!-- hand-written below this line: `vla-eval sweep` keeps it when it rewrites the page -->"
)


def keep_hand_written(generated: str, path: Path) -> str:
    """`generated` followed by the hand-written part of the page at `path` (from
    HAND_WRITTEN_MARK to its end), so a rerun of the sweep replaces only the table. A page
    without the mark is the sweep's own and is replaced whole."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        return generated
    at = old.find(HAND_WRITTEN_MARK)
    if at < 0:
        return generated
    return generated.rstrip("\n") + "\n\n" + old[at:]
