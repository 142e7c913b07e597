"""Benchmark: what GLUESTICK compression costs offline (SVD time), on disk, and at load time.

Why: the exact float64 SVD of every pruning gap is the slow step of compressing a 7B model and
`svd="randomized"` claims to make it affordable at a small loss in error; the artifact format
claims 2:4 values + 2-bit indices (9/16 of dense fp16) plus r*(d_in+d_out) factor values per
layer; the runtime modes trade load time, memory and speed. This measures those claims:
1. exact vs randomized SVD time and gap error on Llama-2-7B-shaped layers (Gaussian weights,
   std 0.02, 2:4 magnitude), extrapolated to the 224 linear layers of a 7B;
2. artifact bytes of a whole 7B (analytical), checked against a real saved artifact;
3. load time, resident bytes and batch-1 latency of that artifact per runtime mode.

    python bench/compress.py --quick                  # smoke check, < 1 min
    python bench/compress.py --out bench/RESULTS.md   # full run (CPU, tens of minutes)
    python bench/compress.py --sections 3 --device cuda --out bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression import (
    MODES,
    GluestickLinear,
    gap_factors,
    load_artifact,
    memory_report,
    prune,
    save_artifact,
)
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.prune import compressed_layers, pruned_weight, replace_module

# Llama-2-7B: per block q,k,v,o 4096x4096, gate/up 11008x4096, down 4096x11008 (d_out x d_in).
LAYERS_7B = {"qkvo": ((4096, 4096), 4), "gate_up": ((11008, 4096), 2), "down": ((4096, 11008), 1)}
BLOCKS, VOCAB, HIDDEN = 32, 32000, 4096
RANKS, MODE_RANK = (64, 128, 256, 512), 128  # section 3 loads the r=128 fp16 artifact


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(header: str, rows: list[str]) -> str:
    """A markdown table from '|'-separated header and row strings."""
    sep = "|".join(["---:"] * len(header.split("|")))
    return "\n".join(f"| {line.replace('|', ' | ')} |" for line in [header, sep, *rows])


def layer_pair(d_out: int, d_in: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(d_out, d_in, generator=g) * 0.02
    return dense, pruned_weight(dense, "magnitude", parse_pattern("2:4"))


def section_svd(layers: dict, ranks: tuple[int, ...], repeats: int = 3) -> str:
    """Exact once per shape; randomized `repeats` times per r (median and min: the machine is
    shared, and the min is the least disturbed run)."""
    rows, exact_s, med, low = [], {}, {}, {}
    warm = torch.randn(64, 64, dtype=torch.float64)  # first LAPACK call pays thread start-up
    torch.linalg.svd(warm), torch.svd_lowrank(warm, q=8, niter=2)
    for i, (name, ((d_out, d_in), _)) in enumerate(layers.items()):
        dense, pruned = layer_pair(d_out, d_in, seed=i)
        log(f"exact SVD {d_out}x{d_in} (float64) ...")
        start = time.perf_counter()
        exact = gap_factors(dense, pruned, max(ranks), svd="exact")
        exact_s[name] = time.perf_counter() - start
        load = os.getloadavg()[0]
        log(f"  {exact_s[name]:.1f} s")
        rows.append(f"{d_out}x{d_in}|exact (any r)|{exact_s[name]:.2f}|-|-|-|-|-|{load:.1f}")
        tail = exact.singular_values.square().flip(0).cumsum(0).flip(0)  # tail[r] = sum s[r:]^2
        for r in ranks:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fast = gap_factors(dense, pruned, r, svd="randomized", oversample=10, power_iters=2)
                times.append(time.perf_counter() - start)
            med[name, r], low[name, r] = statistics.median(times), min(times)
            opt, err = float(tail[r].sqrt()) / exact.gap_norm, fast.relative_error
            log(f"  randomized r={r}: {med[name, r]:.1f} s, rel err {err:.4f}")
            rows.append(
                f"{d_out}x{d_in}|randomized r={r}|{med[name, r]:.2f}|{low[name, r]:.2f}|"
                f"{exact_s[name] / med[name, r]:.1f}x|{opt:.4f}|{err:.4f}|{err / opt:.4f}|"
                f"{os.getloadavg()[0]:.1f}"
            )
    head = f"layer|SVD|s (exact: 1 run; randomized: median of {repeats})|min s|speed-up (median)|"
    out = table(head + "exact rel err at r|randomized rel err|rand/exact err|load1", rows)
    count = {k: c for k, (_, c) in layers.items()}

    def minutes(t: dict, r: int | None = None) -> str:
        return f"{BLOCKS * sum(count[k] * t[k if r is None else (k, r)] for k in layers) / 60:.1f}"

    ext = [f"exact (any r)|{minutes(exact_s)}|-"]
    ext += [f"randomized r={r}|{minutes(med, r)}|{minutes(low, r)}" for r in ranks]
    return (
        f"{out}\n\n'load1' is os.getloadavg()[0] after the row's runs. Extrapolated to the 224 "
        "linear layers of a 7B (32 blocks x (4 q/k/v/o + 2 gate/up + 1 down)), one layer after "
        f"another, from the times above:\n\n{table('SVD|minutes|minutes from min', ext)}"
    )


def analytic_bytes(shapes: list[tuple[int, int]], r: int, factor_dtype: str) -> tuple[int, int]:
    """(packed 2:4 fp16 values + 2-bit indices, factor bytes) summed over `shapes`."""
    packed = sum(d_out * d_in // 2 * 2 + d_out * d_in // 2 * 2 // 8 for d_out, d_in in shapes)
    width, scales = (2, 0) if factor_dtype == "float16" else (1, 8)  # int8: two fp32 scales
    return packed, sum(r * (d_out + d_in) * width + scales for d_out, d_in in shapes)


def section_7b(ranks: tuple[int, ...]) -> str:
    shapes = [s for s, c in LAYERS_7B.values() for _ in range(c * BLOCKS)]
    linear16 = 2 * sum(a * b for a, b in shapes)
    rest16 = 2 * (2 * VOCAB * HIDDEN + (2 * BLOCKS + 1) * HIDDEN)  # embed, lm_head, norms
    rows = [f"dense|-|{linear16 / 1e9:.2f}|1.000|{(linear16 + rest16) / 1e9:.2f}|1.000"]
    for r in (0, *ranks):
        for fd in ("float16", "int8") if r else ("float16",):
            packed, fac = analytic_bytes(shapes, r, fd)
            lin, whole = packed + fac, packed + fac + rest16
            rows.append(
                f"{r}|{fd if r else '-'}|{lin / 1e9:.2f}|{lin / linear16:.3f}|{whole / 1e9:.2f}|"
                f"{whole / (linear16 + rest16):.3f}"
            )
    return (
        "Analytical, whole Llama-2-7B (224 linear layers 2:4 fp16 + 2-bit indices; embeddings,"
        " lm_head and norms dense fp16 in the 'whole' columns):\n\n"
        + table("r|factors|linear GB|linear ratio|whole GB|whole ratio", rows)
    )


def stack_factory(shapes: list[tuple[int, int]]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:  # on meta: every weight comes from the artifact, so skip init cost
        with torch.device("meta"):
            return nn.Sequential(*[nn.Linear(d_in, d_out, bias=False) for d_out, d_in in shapes])

    return make


def build_stack(shapes: list[tuple[int, int]], ranks: tuple[int, ...], folder: Path) -> dict:
    """Save one artifact per (r, factor dtype) of a dense->2:4 stack; returns {(r, fd): path}."""
    torch.manual_seed(0)
    dense = nn.Sequential(*[nn.Linear(d_in, d_out, bias=False) for d_out, d_in in shapes])
    for p in dense.parameters():
        nn.init.normal_(p, std=0.02)
    pruned = prune(dense, "magnitude", "2:4")
    paths = {}
    for r in ranks:
        log(f"stack artifact r={r} (randomized SVD) ...")
        layers = compressed_layers(pruned).items()
        gaps = {
            n: gap_factors(dense.get_submodule(n).weight, m.weight, r, "randomized")
            for n, m in layers
        }
        for fd in ("float16", "int8"):
            model = copy.deepcopy(pruned)
            for n, m in compressed_layers(model).items():
                replace_module(model, n, GluestickLinear(m, gaps[n], fd))
            paths[r, fd] = save_artifact(model, folder / f"r{r}_{fd}", weight_dtype="float16")
            paths[r, fd, "report"] = memory_report(model, value_bytes=2)
    return paths


HEAD_FILES = (
    "r|factors|analytic|memory_report total|pruned+factors files|all files|files/analytic|"
    "ratio analytic|ratio memory_report|ratio all files"
)


def section_files(shapes: list[tuple[int, int]], ranks: tuple[int, ...], paths: dict) -> str:
    rows = []
    for r in ranks:
        for fd in ("float16", "int8"):
            folder, rep = paths[r, fd], paths[r, fd, "report"]
            sizes = {f.name: f.stat().st_size for f in folder.iterdir()}
            packed, fac = analytic_bytes(shapes, r, fd)
            tensors = sizes["pruned.safetensors"] + sizes["factors.safetensors"]
            dense16 = rep["dense_fp16_bytes"]
            total = sum(sizes.values())
            rows.append(
                f"{r}|{fd}|{packed + fac}|{rep['total_bytes']}|{tensors}|{total}|"
                f"{tensors / (packed + fac):.4f}|{(packed + fac) / dense16:.4f}|"
                f"{rep['ratio_to_dense_fp16']:.4f}|{total / dense16:.4f}"
            )
    dims = " + ".join(f"{a}x{b}" for a, b in shapes)
    return (
        f"Measured: a saved artifact of a stack {dims}, `save_artifact(weight_dtype='float16')`"
        " (bytes; 'all files' adds manifest.json, spectra and empty weights.safetensors):\n\n"
        + table(HEAD_FILES, rows)
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_ms(model: nn.Module, d_in: int, device: torch.device, dtype: torch.dtype) -> float:
    x = torch.randn(1, d_in, device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for _ in range(23):  # 3 warm-up
            sync(device)
            start = time.perf_counter()
            model(x)
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times[3:]) * 1e3


def mode_row(path: Path, shapes: list, mode: str, device: torch.device, dtype: Any) -> str:
    factory, loads = stack_factory(shapes), []
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_artifact(path, factory, mode=mode, device=device, dtype=dtype)
        sync(device)
        loads.append(time.perf_counter() - start)
    ran = "/".join(sorted(set(model.artifact["layer_modes"].values())))
    fallback = next(iter(model.artifact["fallbacks"].values()), "")
    ran += f" (fallback: {fallback})" if fallback else ""
    held = next(model.buffers()).dtype if mode == "packed" else next(model.parameters()).dtype
    lat = forward_ms(model, shapes[0][1], device, dtype or torch.float32)
    log(f"{mode}: load {statistics.median(loads):.3f} s, forward {lat:.3f} ms")
    return (
        f"{mode}|{ran}|{str(held).removeprefix('torch.')}|{statistics.median(loads) * 1e3:.0f}|"
        f"{min(loads) * 1e3:.0f}|{memory_report(model)['resident_bytes'] / 1e6:.1f}|{lat:.3f}"
    )


def section_modes(path: Path, shapes: list[tuple[int, int]], device: torch.device) -> str:
    dtype = torch.float16 if device.type == "cuda" else None
    rows = []
    for mode in MODES:
        try:
            rows.append(mode_row(path, shapes, mode, device, dtype))
        except RuntimeError as err:  # report a mode that breaks, and go on with the others
            log(f"{mode} failed: {err}")
            rows.append(f"{mode}|**fails**: RuntimeError: {str(err).splitlines()[0]}|-|-|-|-|-")
    head = "mode|layers ran as|weight dtype held|load ms|min load ms|resident MB|forward ms"
    return (
        f"Runtime modes on {device}, artifact `{path.name}` (median of 5 loads incl. sha256 "
        f"checks, meta-device factory; forward batch 1, median of 20):\n\n{table(head, rows)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shapes / 8, ranks / 8 (smoke check)")
    parser.add_argument("--device", default="cpu", help="device for section 3 (cpu, cuda)")
    parser.add_argument("--sections", default="123", help="which sections to run, e.g. 3")
    parser.add_argument("--out", type=Path, help="markdown file to append the results to")
    args = parser.parse_args()
    load0 = os.getloadavg()
    div = 8 if args.quick else 1
    layers = {k: ((a // div, b // div), c) for k, ((a, b), c) in LAYERS_7B.items()}
    ranks = tuple(r // div for r in RANKS)
    rank = MODE_RANK // div
    stack = [(4096 // div, 4096 // div), (11008 // div, 4096 // div)]
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    parts = [
        f"## bench/compress.py on {where}, {dt.datetime.now().isoformat(timespec='minutes')}",
        f"Command: `python {' '.join(sys.argv)}`  \nos.cpu_count() {os.cpu_count()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), os.getloadavg() at start "
        f"{tuple(round(x, 2) for x in load0)}: a shared machine, possibly busy with other work, "
        "so times are upper bounds for a quiet one."
        + (" --quick: shapes and ranks / 8; the 7B extrapolation is then not one." * args.quick),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if "1" in args.sections:
            parts += ["### 1. Exact vs randomized SVD of the 2:4 gap", section_svd(layers, ranks)]
        built = ranks if "2" in args.sections else (rank,) if "3" in args.sections else ()
        paths = build_stack(stack, built, Path(tmp))
        if "2" in args.sections:
            files = section_files(stack, ranks, paths)
            parts += ["### 2. Artifact bytes", section_7b(ranks), files]
        if "3" in args.sections:
            modes = section_modes(paths[rank, "float16"], stack, device)
            parts += ["### 3. Load time and latency per runtime mode", modes]
    parts.append(f"os.getloadavg() at end {tuple(round(x, 2) for x in os.getloadavg())}.")
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.out:
        sep = "\n" if args.out.exists() and args.out.stat().st_size else ""
        with open(args.out, "a") as f:
            f.write(sep + text)
        log(f"appended to {args.out}")


if __name__ == "__main__":
    main()
