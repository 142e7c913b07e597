"""Markdown and plots of an offline bag replay: dense vs compressed side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Offline replay of `{result['bag']}`",
        "",
        f"Task {result['task']}; {result['frames']} frames, {result['recorded_actions']} recorded "
        f"actions ({result['unmatched_actions']} without their frame), "
        f"{result['bag_seconds']:.1f} s of recording; reference model `{result['reference']}`.",
        "",
    ]
    if result.get("error"):
        lines += [f"**Replay stopped early:** {result['error']}", ""]
    lines += [
        "| model | variant | steps | MSE vs recorded | cosine vs recorded | direction agrees "
        "| MSE vs reference | cosine vs reference | command violations | x real time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, m in result["models"].items():
        viol = ", ".join(f"{k} {v}" for k, v in m["command_violations"].items()) or "none"
        lines.append(
            f"| `{name}` | {m['variant']} | {m['steps']} | {m['vs_recorded']['mse']:.4f} | "
            f"{m['vs_recorded']['cosine']:.3f} | {m['vs_recorded']['direction_agreement']:.1%} | "
            f"{m['vs_reference']['mse']:.4f} | {m['vs_reference']['cosine']:.3f} | {viol} | "
            f"{m['realtime_factor']:.0f} |"
        )
    rec = ", ".join(f"{k} {v}" for k, v in result["recorded_command_violations"].items())
    lines += ["", f"Recorded commands' own violations: {rec or 'none'}.", ""]
    lines += stamp_lines(result.get("stamps"))
    return "\n".join(lines)


def stamp_lines(stamps: dict[str, Any] | None) -> list[str]:
    """What the reader found about the bag's stamps and chunks, in words: nothing is dropped
    silently, so a reader of the report sees disorder, gaps and unchecked data."""
    if not stamps:
        return []
    lines = []
    disorder = stamps["out_of_order"]
    if disorder:
        shown = "; ".join(f"{d['topic']} {d['stamp_s']:.3f} s after {d['previous_s']:.3f} s"
                          for d in disorder[:5])  # fmt: skip
        more = f" (and {len(disorder) - 5} more)" if len(disorder) > 5 else ""
        late = len(stamps["late_steps"])
        lines.append(
            f"Out-of-order stamps: {len(disorder)}: {shown}{more}; steps sorted back by stamp, "
            f"{late} too late to sort (evaluated where they arrived)."
        )
    gaps = stamps["gaps"]
    if gaps:
        shown = "; ".join(f"{g['topic']} {g['start_s']:.3f}-{g['end_s']:.3f} s "
                          f"({g['seconds']:.1f} s)" for g in gaps[:5])  # fmt: skip
        more = f" (and {len(gaps) - 5} more)" if len(gaps) > 5 else ""
        lines.append(f"Gaps in the recording: {len(gaps)}: {shown}{more}.")
    if stamps["crc_unchecked_chunks"]:
        unchecked, checked = stamps["crc_unchecked_chunks"], stamps["crc_checked_chunks"]
        lines.append(
            f"{unchecked} chunks carry no CRC (written without one) and could not be checked; "
            f"{checked} were."
        )
    return [*lines, ""] if lines else []


def plot(result: dict[str, Any], out: Path) -> Path:
    """Left: per-episode MSE against the recording, one bar per model. Right: per-step MSE
    against the reference over time, with the steps whose command would violate a limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = result["models"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    episodes = list(dict.fromkeys(e["episode"] for m in models.values()
                                  for e in m["per_episode"]))  # fmt: skip
    width = 0.8 / max(1, len(models))
    for i, (name, m) in enumerate(models.items()):
        by_ep = {e["episode"]: e["mse"] for e in m["per_episode"]}
        x = np.arange(len(episodes)) + i * width
        ax1.bar(x, [by_ep.get(ep, np.nan) for ep in episodes], width, label=Path(name).name)
        t0 = m["per_step"][0]["stamp"] if m["per_step"] else 0.0
        t = [s["stamp"] - t0 for s in m["per_step"]]
        ax2.plot(t, [s["ref_mse"] for s in m["per_step"]], lw=0.8, label=Path(name).name)
        bad = [(s["stamp"] - t0, s["ref_mse"]) for s in m["per_step"] if s["violations"]]
        if bad:
            ax2.scatter(*zip(*bad, strict=True), marker="x", color="red", zorder=3)
    ax1.set_xticks(np.arange(len(episodes)) + 0.4 - width / 2, episodes, rotation=20,
                   fontsize=8)  # fmt: skip
    ax1.set(ylabel="action MSE vs recorded", title="per episode")
    ax1.legend(fontsize=8)
    ax2.set(xlabel="bag time (s)", ylabel=f"MSE vs {Path(result['reference']).name}",
            title="per step (x: command would violate a limit)")  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
