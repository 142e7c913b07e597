"""`vla-inspect ARTIFACT`: what an artifact holds, what it costs, and how flat its gap spectra are.

vla-inspect artifacts/wanda24_r64
vla-inspect artifacts/wanda24_r64 --plot spectra.png --json inspect.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from vla_pruned_ros.compression import ArtifactError, read_manifest
from vla_pruned_ros.compression.artifact import SPECTRA, WEIGHTS


def summarize(folder: Path) -> dict[str, Any]:
    """Manifest, on-disk bytes per file, and dense-equivalent sizes, without building the model
    (checksums are verified first)."""
    from safetensors import safe_open

    manifest = read_manifest(folder, verify=True)
    files = {name: (folder / name).stat().st_size for name in manifest["files"]}
    dense = 0
    for entry in manifest["layers"].values():
        dense += math.prod(entry["shape"]) + (entry["shape"][0] if entry["bias"] else 0)
    rest = 0
    stem = WEIGHTS.removesuffix(".safetensors")
    for name in manifest["files"]:  # weights.safetensors, or its shards from streaming
        if name == WEIGHTS or name.startswith(f"{stem}-"):
            with safe_open(str(folder / name), "pt") as f:
                rest += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    stored = sum(size for name, size in files.items()  # tensors only, not the processor files
                 if name.endswith(".safetensors") and not name.startswith("spectra"))  # fmt: skip
    from vla_pruned_ros.compression.runtime_modes import expected_resident

    return {
        "manifest": manifest,
        "default_mode": expected_resident(folder, manifest),
        "file_bytes": files,
        "stored_bytes": stored,
        "dense_params": dense + rest,
        "dense_fp16_bytes": 2 * (dense + rest),
        "ratio_to_dense_fp16": round(stored / (2 * (dense + rest)), 4),
    }


def layer_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, e in manifest["layers"].items():
        spec = e.get("spectrum") or {}
        rows.append({
            "layer": name,
            "shape": "x".join(map(str, e["shape"])),
            "pattern": e["pattern"],
            "rank": e["rank"],
            "factors": e["factor_dtype"] if e["rank"] else "-",
            "energy_kept": spec.get("energy_kept"),
            "effective_rank": spec.get("effective_rank"),
            "rank_90": spec.get("rank_90"),
            "full_rank": spec.get("full_rank"),
        })  # fmt: skip
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_summary(s: dict[str, Any]) -> None:
    m = s["manifest"]
    source = m.get("source", {}).get("model_id")
    print(f"artifact  {source} -> {m['method']} {m['pattern']}, "
          f"sparsity {m['sparsity']:.1%}, GLUESTICK {m['rank_policy']}")  # fmt: skip
    print(f"created   {m['created']} by vla_pruned_ros {m['package_version']} "
          f"(format {m['format_version']}); checksums OK")  # fmt: skip
    print("files")
    for name, size in s["file_bytes"].items():
        print(f"  {name:22s} {size / 1e6:9.3f} MB")
    print(
        f"  {'stored (w/o spectra)':22s} {s['stored_bytes'] / 1e6:9.3f} MB = "
        f"{s['ratio_to_dense_fp16']:.3f} x dense fp16 ({s['dense_fp16_bytes'] / 1e6:.2f} MB)"
    )
    from vla_pruned_ros.compression.runtime_modes import describe_expected

    print(f"memory    loaded by default: {describe_expected(s['default_mode'])}")
    if m["provided_by_factory"]:
        print(f"  not stored (from the model factory): {', '.join(m['provided_by_factory'])}")
    deploy = (m.get("extra") or {}).get("deploy")
    if deploy:
        adapter = deploy.get("adapter") or {}
        print(f"deploy    adapter {adapter.get('name') or '-'} {adapter.get('options') or {}}; "
              f"{len(deploy.get('files', []))} checkpoint files (remote code: "
              f"{', '.join(deploy.get('remote_code', [])) or 'none'}); source sha256 "
              f"{(m.get('source') or {}).get('sha256') or '-'}")  # fmt: skip
    rows = layer_rows(m)
    cols = ["layer", "shape", "pattern", "rank", "factors", "energy_kept", "effective_rank",
            "rank_90", "full_rank"]  # fmt: skip
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(widths[c]) for c in cols))


def plot_spectra(folder: Path, manifest: dict[str, Any], out: Path) -> Path:
    """Cumulative gap energy against rank for every corrected layer: flat spectra climb slowly,
    which is the paper's explanation of why a small rank recovers only part of the loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from safetensors.torch import load_file

    spectra = {}
    stem = SPECTRA.removesuffix(".safetensors")
    for name in manifest["files"]:
        if name == SPECTRA or name.startswith(f"{stem}-"):
            spectra.update(load_file(str(folder / name)))
    if not spectra:
        raise ArtifactError(f"{folder} holds no spectra (rank 0 artifact?)")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for s in spectra.values():
        e = s.double().square()
        cum = (torch.cumsum(e, 0) / e.sum()).numpy()
        frac = [(i + 1) / len(cum) for i in range(len(cum))]
        ax1.plot(range(1, len(cum) + 1), cum, lw=0.8, alpha=0.6)
        ax2.plot(frac, cum, lw=0.8, alpha=0.6)
    ranks = {e["rank"] for e in manifest["layers"].values()}
    if len(ranks) == 1:
        ax1.axvline(ranks.pop(), color="k", ls="--", lw=1, label="chosen rank")
        ax1.legend()
    ax1.set(xlabel="rank r", ylabel="gap energy kept", xscale="log",
            title=f"{len(spectra)} layers: energy kept at rank r")  # fmt: skip
    ax2.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfectly flat")
    ax2.set(xlabel="rank / full rank", ylabel="gap energy kept", title="normalised")
    ax2.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla-inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--plot", type=Path, help="write a PNG of the layers' gap spectra")
    p.add_argument("--json", type=Path, help="write the summary and per-layer rows as JSON")
    args = p.parse_args(argv)
    try:
        s = summarize(args.artifact)
        print_summary(s)
        if args.plot:
            print(f"spectra plot: {plot_spectra(args.artifact, s['manifest'], args.plot)}")
    except (OSError, ArtifactError) as err:
        print(f"vla-inspect: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        s = {**s, "layers": layer_rows(s["manifest"])}
        args.json.write_text(json.dumps(s, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
