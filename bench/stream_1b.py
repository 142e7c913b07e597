"""Can a workstation compress a checkpoint it could barely hold twice? The streaming pipeline
(`vla-prune --model FOLDER`: read a tensor, prune it, factor its gap, write it packed, free it)
on a synthetic 1.1B-parameter Llama-shaped model (TinyLlama's shapes, random fp16 weights, saved
as sharded safetensors), measured in a fresh process: wall time, peak resident memory against the
fp16 model size (target: at most 1.3x), and artifact bytes against dense; then extrapolated to a
7B model by parameter count.

    .venv/bin/python bench/stream_1b.py --rank 64 --out bench/RESULTS_stream.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPE = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
             num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
             tie_word_embeddings=False)  # fmt: skip
LLAMA2_7B_PARAMS = 6.74e9


def write_synthetic(folder: Path, shard_bytes: int = 1 << 30) -> int:
    """Random fp16 weights under the real parameter names, sharded like save_pretrained."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPE)
    config.architectures = ["LlamaForCausalLM"]
    config.torch_dtype = "float16"
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    shard, size, index, weight_map, total = {}, 0, 0, {}, 0

    def flush() -> None:
        nonlocal shard, size, index
        if shard:
            index += 1
            name = f"model-{index:05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
            shard, size = {}, 0

    for key, shape in shapes.items():
        t = (torch.randn(shape, generator=g) * 0.02).to(torch.float16)
        if key.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.float16)
        shard[key] = t
        size += t.numel() * 2
        total += t.numel()
        if size >= shard_bytes:
            flush()
    flush()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total * 2}, "weight_map": weight_map})
    )
    return total


CHILD = """
import json, sys, time
from pathlib import Path
from vla_pruned_ros.compression.streaming import peak_rss_bytes
from vla_pruned_ros.models.hf_checkpoint import compress_checkpoint
start = time.perf_counter()
compress_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]), "2:4", int(sys.argv[3]),
                    svd="randomized", factor_dtype="float16", progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss": peak_rss_bytes()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: /tmp)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream1b_", dir=args.work))
    print(f"writing the synthetic checkpoint to {work}", file=sys.stderr)
    t0 = time.perf_counter()
    params = write_synthetic(work / "model")
    write_s = time.perf_counter() - t0
    fp16 = params * 2
    print(f"{params / 1e9:.2f} B params, {fp16 / 1e9:.2f} GB fp16, written in {write_s:.0f} s",
          file=sys.stderr)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", CHILD, str(work / "model"), str(work / "art"),
                           str(args.rank)], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    art = sum(f.stat().st_size for f in (work / "art").iterdir()
              if not f.name.startswith("spectra"))  # fmt: skip
    scale = LLAMA2_7B_PARAMS / params
    lines = [
        f"# Streaming compression of a 1.1B Llama-shaped checkpoint ({dt.date.today()})",
        "",
        f"Command: `.venv/bin/python bench/stream_1b.py --rank {args.rank}`; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average at start "
        f"{os.getloadavg()[0]:.1f}. Magnitude 2:4 on every decoder linear layer (154), "
        f"GLUESTICK r={args.rank} by randomized SVD, fp16 values and factors.",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| parameters | {params / 1e9:.3f} B |",
        f"| checkpoint (fp16) | {fp16 / 1e9:.2f} GB |",
        f"| wall time | {result['seconds']:.0f} s |",
        f"| peak resident memory | {result['peak_rss'] / 1e9:.2f} GB "
        f"({result['peak_rss'] / fp16:.2f}x the fp16 model; target <= 1.3x) |",
        f"| artifact on disk | {art / 1e9:.2f} GB ({art / fp16:.3f}x dense fp16) |",
        f"| 7B extrapolation (x{scale:.1f} by parameters) | ~{result['seconds'] * scale / 60:.0f}"
        " min; memory not measured at 7B (the pipeline holds one tensor and "
        "64 MB write buffers at a time, so it should not grow with depth) |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
