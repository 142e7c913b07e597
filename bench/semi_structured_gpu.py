"""Does the `semi_structured` runtime mode give the same outputs as `materialize`, and is it
faster, on a CUDA GPU? (CI has no GPU; this is run by hand on a lent machine.)

The paper's authors run the pruned weights through PyTorch's 2:4 kernels; PyTorch issue 111339
measured them *slower* than dense at batch size 1. This script measures both on Llama-2-7B-shaped
layers (q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008) pruned 2:4 with a rank-r GLUESTICK
correction, loaded from a real artifact, for several token counts.

    PYTHONPATH=. python3 bench/semi_structured_gpu.py --out bench/RESULTS_semi_structured.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vla_pruned_ros.compression import gluestick, load_artifact, memory_report, prune, save_artifact


class Block(nn.Module):
    """One 7B-shaped set of projections applied one after another (shapes chain)."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4096, 4096, bias=False)
        self.up = nn.Linear(4096, 11008, bias=False)
        self.down = nn.Linear(11008, 4096, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(self.q(x)))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument(
        "--backend",
        choices=["default", "cutlass"],
        default="default",
        help="force PyTorch's CUTLASS 2:4 kernels instead of cuSPARSELt",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    if args.backend == "cutlass":
        from torch.sparse import SparseSemiStructuredTensor

        SparseSemiStructuredTensor._FORCE_CUTLASS = True
    torch.manual_seed(0)
    dense = Block().half()
    for p in dense.parameters():
        nn.init.normal_(p, std=0.02)
    model = gluestick(dense.float(), prune(dense.float(), "magnitude", "2:4"), args.rank)
    lines = [
        f"# semi_structured vs materialize on {torch.cuda.get_device_name()}",
        "",
        f"torch {torch.__version__}, 2:4 backend {args.backend}; "
        "block = q 4096x4096 -> up 11008x4096 -> down 4096x11008, "
        f"2:4 magnitude, GLUESTICK r={args.rank} fp16 factors; artifact in fp16; median of 50.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_artifact(model, Path(tmp) / "art", weight_dtype="float16")
        loaded = {}
        for mode in ("materialize", "semi_structured"):
            start = time.perf_counter()
            loaded[mode] = load_artifact(folder, Block, mode=mode, device="cuda",
                                         dtype=torch.float16)  # fmt: skip
            torch.cuda.synchronize()
            load_s = time.perf_counter() - start
            lines.append(
                f"- {mode}: load {load_s:.2f} s, layer modes "
                f"{sorted(set(loaded[mode].artifact['layer_modes'].values()))}, fallbacks "
                f"{loaded[mode].artifact['fallbacks'] or 'none'}, resident "
                f"{memory_report(loaded[mode])['resident_bytes'] / 1e6:.1f} MB"
            )
        lines += ["", "| tokens | dense, no factors ms | materialize ms | semi_structured ms "
                  "| speed-up | max abs diff |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        dense_cuda = dense.half().cuda()
        for tokens in (1, 16, 128, 1024, 4096):
            x = torch.randn(tokens, 4096, device="cuda", dtype=torch.float16)
            with torch.inference_mode():
                ref = loaded["materialize"](x)
                out = loaded["semi_structured"](x)
                t_mat = _time(lambda x=x: loaded["materialize"](x))
                t_ss = _time(lambda x=x: loaded["semi_structured"](x))
                t_dense = _time(lambda x=x: dense_cuda(x))
            diff = float((out.float() - ref.float()).abs().max())
            lines.append(
                f"| {tokens} | {t_dense:.3f} | {t_mat:.3f} | {t_ss:.3f} | "
                f"{t_mat / t_ss:.2f}x | {diff:.2e} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
