"""Runtime modes on CPU: does the `sparse` kernel hold less and run faster than dense?

The 7B-shaped block (q 4096x4096, up 11008x4096, down 4096x11008; random weights, 2:4
magnitude, GLUESTICK factors from a randomized SVD of the gap), every variant interleaved in one
process (median of `--reps` forwards of the three layers), as ratios against the fastest torch
dense dtype at the same token count; resident bytes per variant; the measured read bandwidth and
each variant's distance from the bytes-read roofline; the artifact's load peak (RSS above the
process's baseline) in a fresh process per mode. The embedded VLA's policy step and the 1.1B
checkpoint's per-token decode, dense vs sparse, are `bench/runtime_policy.py`.

    .venv/bin/python bench/runtime.py --out bench/RESULTS_runtime.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vla_pruned_ros.compression.gluestick import GluestickLinear, gap_factors
from vla_pruned_ros.compression.kernels import kernel
from vla_pruned_ros.compression.memory import resident_bytes
from vla_pruned_ros.compression.runtime import to_packed
from vla_pruned_ros.compression.sparse_runtime import to_sparse

BLOCK = {"q": (4096, 4096), "up": (11008, 4096), "down": (4096, 11008)}


def prune24(w: torch.Tensor) -> torch.Tensor:
    g = w.reshape(w.shape[0], -1, 4)
    keep = g.abs().topk(2, -1).indices
    return (g * torch.zeros_like(g).scatter_(-1, keep, 1.0)).reshape(w.shape)


def build_layers(shapes: dict, rank: int, scale: float = 1.0) -> dict[str, dict]:
    """Per layer: dense fp32 weight, pruned (fp16-exact) weight, rank-`rank` factors."""
    out = {}
    gen = torch.Generator().manual_seed(0)
    for name, (d_out, d_in) in shapes.items():
        d_out, d_in = int(d_out * scale) // 8 * 8, int(d_in * scale) // 8 * 8
        w = torch.randn(d_out, d_in, generator=gen) * d_in**-0.5
        pruned = prune24(w).half().float()
        factors = gap_factors(w, pruned, rank, svd="randomized") if rank else None
        out[name] = {"dense": w, "pruned": pruned, "factors": factors}
    return out


def _linear(pruned: torch.Tensor, factors, rank: int, factor_dtype: str) -> GluestickLinear:
    lin = nn.Linear(pruned.shape[1], pruned.shape[0], bias=False)
    lin.weight.data = pruned
    f = None
    if rank and factors is not None:
        f = type(factors)(factors.a[:, :rank].contiguous(), factors.b[:rank].contiguous(),
                          factors.singular_values, factors.gap_norm, factors.error)  # fmt: skip
    return GluestickLinear(lin, f, factor_dtype, "2:4", "magnitude")


def variants(layers: dict) -> dict[str, list[nn.Module | torch.Tensor]]:
    """Each variant as one callable per layer (a dense weight for torch dense)."""
    v: dict[str, list] = {}
    for dt_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16),
                           ("fp16", torch.float16)):  # fmt: skip
        v[f"torch dense {dt_name}"] = [layer["dense"].to(dtype) for layer in layers.values()]
    v["materialize r=64 (fp32)"] = [
        _linear(x["pruned"], x["factors"], 64, "float16") for x in layers.values()
    ]
    v["packed r=64"] = [
        to_packed(_linear(x["pruned"], x["factors"], 64, "float16"), torch.float16)
        for x in layers.values()
    ]
    for rank, fdt in ((0, "float16"), (16, "float16"), (64, "float16"), (64, "int8")):
        v[f"sparse r={rank} {fdt if rank else ''}".strip()] = [
            to_sparse(_linear(x["pruned"], x["factors"], rank, fdt), torch.float16)
            for x in layers.values()
        ]
    for rank in (0, 16, 64):  # bf16 values fed bf16 inputs: a model run in bf16 (the AMX path)
        v[f"sparse r={rank} bf16 model"] = [
            _bf16_model(to_sparse(_linear(x["pruned"], x["factors"], rank, "float16"),
                                  torch.bfloat16))
            for x in layers.values()
        ]  # fmt: skip
    k = kernel()
    if k is not None and k.simd() == "avx512":  # the AVX2 path beside it, on the same CPU
        v["sparse r=16 float16 avx2"] = [
            Avx2Path(to_sparse(_linear(x["pruned"], x["factors"], 16, "float16"), torch.float16))
            for x in layers.values()
        ]
    return v


def _bf16_model(layer: nn.Module) -> nn.Module:
    """The layer as a model cast to bf16 runs it: bf16 inputs (its stored values and factors
    keep their dtypes), which is what takes the kernel's AMX path where the CPU has one."""
    layer.input_dtype = torch.bfloat16
    return layer.to(torch.bfloat16)


class Avx2Path(nn.Module):
    """A sparse layer run with the kernel's AVX-512 2:4 dot switched off: the AVX2 path, timed
    on a CPU that has both."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = kernel()
        k.use_avx512(0)
        try:
            return self.inner(x)
        finally:
            k.use_avx512(1)


def _forward(parts: list, xs: dict[torch.dtype, list[torch.Tensor]]) -> None:
    for i, p in enumerate(parts):
        if isinstance(p, torch.Tensor):
            F.linear(xs[p.dtype][i], p)
        else:
            p(xs[getattr(p, "input_dtype", torch.float32)][i])


def _nbytes(parts: list) -> int:
    total = 0
    for p in parts:
        if isinstance(p, torch.Tensor):
            total += p.numel() * p.element_size()
        else:
            total += resident_bytes(p)
    return total


def read_bandwidth() -> float:
    """GB/s of a sum over 512 MB of fp32 (best of 5): the bytes-read roofline's slope."""
    t = torch.ones(128 << 20)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        t.sum()
        best = min(best, time.perf_counter() - start)
    return t.numel() * 4 / best / 1e9


def time_variants(
    v: dict, layers: dict, tokens: int, reps: int, fixed_order: bool = False
) -> dict[str, float]:
    """Median seconds per variant. Each rep runs the variants in a fresh (seeded) random order:
    in a fixed order the variant that always follows the heaviest ones (`materialize`,
    `packed`) absorbs their after-effects (on a loaded machine ~40 % slower right after
    `materialize`), which is what made `sparse r=0` look slower than r=16 at 1 token."""
    gen = torch.Generator().manual_seed(1)
    xs32 = [torch.randn(tokens, x["dense"].shape[1], generator=gen) for x in layers.values()]
    xs = {d: [x.to(d) for x in xs32] for d in (torch.float32, torch.bfloat16, torch.float16)}
    calls = {name: (lambda parts=parts: _forward(parts, xs)) for name, parts in v.items()}
    with torch.inference_mode():
        for call in calls.values():  # warm-up
            call()
        times = time_interleaved(calls, reps, fixed_order)
    return {k: statistics.median(t) for k, t in times.items()}


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    reps: int,
    fixed_order: bool = False,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of every call of each variant by `clock`, `reps` rounds; each round runs the
    variants in a fresh random order (seeded), so no variant always follows the same one."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(reps):
        order = list(calls)
        if not fixed_order:
            rng.shuffle(order)
        for name in order:
            start = clock()
            calls[name]()
            times[name].append(clock() - start)
    return times


LOAD_CHILD = r"""
import sys, torch
from torch import nn
from vla_pruned_ros.compression import load_artifact
from vla_pruned_ros.compression.memory import resident_bytes, unmap_large_allocations
from vla_pruned_ros.compression.kernels import kernel
kernel(); import numpy
unmap_large_allocations()  # what the entry points that load (vla-prune, the node) opt in to
shapes = eval(sys.argv[2])
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        for n, (o, i) in shapes.items():
            setattr(self, n, nn.Linear(i, o, bias=False, device="meta"))
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
now = rss()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS to the current RSS
m = load_artifact(sys.argv[1], Block, mode=sys.argv[3], dtype=torch.float32)
peak = hwm()
print(resident_bytes(m), peak - now, now)
"""


def load_peaks(layers: dict, folder: Path) -> dict[str, tuple[int, int]]:
    """(resident bytes, peak RSS above the pre-load baseline) per mode, each in a fresh
    process, for an fp16 artifact of the block with fp16 factors at r=64."""
    from vla_pruned_ros.compression import save_artifact

    block = nn.Module()
    for name, x in layers.items():
        setattr(block, name, _linear(x["pruned"], x["factors"], 64, "float16"))
    save_artifact(block, folder, weight_dtype="float16")
    del block
    shapes = {n: tuple(x["dense"].shape) for n, x in layers.items()}
    out = {}
    for mode in ("materialize", "packed", "sparse"):
        done = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(folder), repr(shapes), mode],
                              capture_output=True, text=True, check=True)  # fmt: skip
        res, peak, *_ = map(int, done.stdout.split())
        out[mode] = (res, peak)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the block (smoke runs)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip", nargs="*", default=[],
                        help="leave out variants whose name starts with one of these")  # fmt: skip
    parser.add_argument("--fixed-order", action="store_true",
                        help="the same order every rep (the old way)")  # fmt: skip
    args = parser.parse_args()
    load0 = os.getloadavg()
    layers = build_layers(BLOCK, 64, args.scale)
    v = {k: p for k, p in variants(layers).items() if not k.startswith(tuple(args.skip))}
    bw = read_bandwidth()
    rows = []
    nbytes = {k: _nbytes(p) for k, p in v.items()}
    dense16 = nbytes["torch dense fp16"]
    for tokens in args.tokens:
        t = time_variants(v, layers, tokens, args.reps, args.fixed_order)
        fastest = min((t[k], k) for k in t if k.startswith("torch dense"))
        for k, secs in t.items():
            roof = nbytes[k] / (bw * 1e9)
            rows.append((tokens, k, secs * 1e3, secs / fastest[0], secs / roof, fastest[1]))
        print(f"tokens={tokens} done", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        peaks = load_peaks(layers, Path(tmp) / "art")
    load1 = os.getloadavg()
    lines = [
        "# Runtime modes on CPU: the 7B-shaped block (2:4 magnitude + GLUESTICK)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load0[0]:.1f} before / "
        f"{load1[0]:.1f} after (a machine shared with other jobs: ratios, not absolute "
        f"times, are the result). Measured read bandwidth {bw:.1f} GB/s.",
        "",
        "    " + " ".join([sys.executable.split("/")[-1] + " bench/runtime.py", *sys.argv[1:]]),
        "",
        "| tokens | variant | ms (median) | vs fastest torch dense | vs bytes-read roofline |",
        "|---:|---|---:|---:|---:|",
    ]
    for tokens, k, ms, ratio, roof, fastest in rows:
        lines.append(f"| {tokens} | {k} | {ms:.1f} | {ratio:.2f}x (of {fastest[12:]}) | "
                     f"{roof:.1f}x |")  # fmt: skip
    lines += ["", "| variant | resident bytes | vs dense fp16 |", "|---|---:|---:|"]
    for k, b in nbytes.items():
        lines.append(f"| {k} | {b / 1e6:.1f} MB | {b / dense16:.3f}x |")
    lines += ["", "Loading the fp16 artifact (r=64, fp16 factors), one fresh process per mode: "
              "peak RSS above the pre-load baseline against the loaded model's resident bytes.",
              "", "| mode | resident | load peak | peak / resident |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for mode, (res, peak) in peaks.items():
        lines.append(f"| {mode} | {res / 1e6:.1f} MB | {peak / 1e6:.1f} MB | {peak / res:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
