"""Prepared for a lent GPU (CI has none; not yet run): `semi_structured` against dense fp16 on
the 7B-shaped block at 1-4096 tokens, with the GLUESTICK factors in the same call, and where the
time goes (a torch.profiler table per variant), to find out why today's path measured 2-10x
slower than dense (`bench/RESULTS_semi_structured.md`).

    .venv/bin/python bench/runtime_gpu.py --out bench/RESULTS_runtime_gpu.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

BLOCK = {"q": (4096, 4096), "up": (11008, 4096), "down": (4096, 11008)}


def prune24(w: torch.Tensor) -> torch.Tensor:
    g = w.reshape(w.shape[0], -1, 4)
    keep = g.abs().topk(2, -1).indices
    return (g * torch.zeros_like(g).scatter_(-1, keep, 1.0)).reshape(w.shape)


def _time(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def project_layers(layers: list, rank: int) -> list:
    """The runtime's own `semi_structured` mode (what `load_artifact(mode='semi_structured')`
    builds: a GluestickLinear whose weight is a SparseSemiStructuredTensor, factors applied in
    its forward), so the table shows today's path beside the raw torch calls."""
    from torch import nn

    from vla_pruned_ros.compression.gluestick import GapFactors, GluestickLinear
    from vla_pruned_ros.compression.runtime import to_semi_structured

    out = []
    for w, _, a, b in layers:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
        lin.weight.data = w.clone()
        f = GapFactors(a.float(), b.float(), torch.zeros(rank), 0.0, 0.0)
        layer = GluestickLinear(lin, f, "float16", "2:4", "magnitude").to(w.device, w.dtype)
        to_semi_structured(layer)
        out.append(layer.eval())
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 64, 256, 1024, 4096])
    parser.add_argument(
        "--profile-tokens", type=int, nargs="*", default=[1, 256],
        help="token counts with a torch.profiler table (after the main table)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this bench needs a GPU")
    from torch.sparse import to_sparse_semi_structured

    dev, r = torch.device("cuda"), args.rank
    layers = []
    for d_out, d_in in BLOCK.values():
        w = prune24(torch.randn(d_out, d_in, device=dev) * d_in**-0.5).half()
        a = torch.randn(d_out, r, device=dev, dtype=torch.half) * 0.01
        b = torch.randn(r, d_in, device=dev, dtype=torch.half) * 0.01
        layers.append((w, to_sparse_semi_structured(w), a, b))
    ours = project_layers(layers, r)
    lines = [f"{torch.cuda.get_device_name()}, torch {torch.__version__}, rank {r}", "",
             "| tokens | dense fp16 ms | semi_structured ms | + factors (two GEMMs) ms | "
             "+ factors (one concatenated GEMM) ms | runtime's semi_structured layer ms | "
             "ratio semi/dense | ratio runtime layer/dense |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    profiles = []
    for tokens in args.tokens:
        xs = [torch.randn(tokens, w.shape[1], device=dev, dtype=torch.half) for w, *_ in layers]
        cat = [torch.cat([w, b]) for w, _, a, b in layers]  # [W; B] x in one dense call

        def dense(xs=xs):
            return [F.linear(x, w) for x, (w, *_) in zip(xs, layers, strict=True)]

        def semi(xs=xs):
            return [F.linear(x, s) for x, (_, s, *_) in zip(xs, layers, strict=True)]

        def semi_f(xs=xs):
            return [F.linear(x, s) + F.linear(F.linear(x, b), a)
                    for x, (_, s, a, b) in zip(xs, layers, strict=True)]  # fmt: skip

        def fused(xs=xs, cat=cat):
            out = []
            for x, c, (w, _, a, _) in zip(xs, cat, layers, strict=True):
                yz = F.linear(x, c)
                out.append(yz[:, : w.shape[0]] + F.linear(yz[:, w.shape[0] :], a))
            return out

        def runtime_layer(xs=xs):
            return [layer(x) for x, layer in zip(xs, ours, strict=True)]

        with torch.inference_mode():
            t = [_time(f) for f in (dense, semi, semi_f, fused, runtime_layer)]
        lines.append(f"| {tokens} | {t[0]:.3f} | {t[1]:.3f} | {t[2]:.3f} | {t[3]:.3f} | "
                     f"{t[4]:.3f} | {t[1] / t[0]:.2f}x | {t[4] / t[0]:.2f}x |")  # fmt: skip
        for name, fn in (("semi_structured", semi), ("runtime layer", runtime_layer)):
            if tokens not in args.profile_tokens:
                continue
            acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.inference_mode(), torch.profiler.profile(activities=acts) as p:
                fn()
                torch.cuda.synchronize()
            table = p.key_averages().table(sort_by="cuda_time_total", row_limit=10)
            profiles += ["", f"{name}, {tokens} tokens:", "", "```", table, "```"]
    text = "\n".join(lines + profiles) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
