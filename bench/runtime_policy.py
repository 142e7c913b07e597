"""Runtime modes on whole models, dense vs `sparse`, variants interleaved in one process.

- `--part vla`: the embedded VLA's policy step, `policy.predict(rgb, instruction)` per camera
  frame, for the shipped dense model and a magnitude 2:4 + GLUESTICK artifact of it (built here
  the way `vla-prune --method magnitude --pattern 2:4 --rank R` builds it) loaded through
  `models.registry.load_policy` in `materialize` and `sparse`; simulator frames, one instruction
  (its text features cached after the first call, as in the node) and, as a second row per
  variant, a step whose instruction is new (the text encoder runs too). Target: step p50 in
  `sparse` <= 1.1x dense.
- `--part decode`: per-token decode of the synthetic TinyLlama-shaped checkpoint of
  `bench/stream_1b.py` (1.1B, random fp16 weights; `--decode-scale` shrinks its width and
  depth), dense (transformers, fp32 and bf16) against the streamed 2:4 + GLUESTICK artifact
  loaded by `load_checkpoint_artifact` in `sparse` (fp32 compute): a short prompt, then the
  same fixed tokens fed one at a time with the KV cache, each token a round.

Each round runs the variants in a fresh seeded random order (`runtime.time_interleaved`, the
block bench's own); the tables give p50/p90 and p50 against the fastest dense variant.

    .venv/bin/python bench/runtime_policy.py --part vla decode --cache /tmp/rp_cache
    .venv/bin/python bench/runtime_policy.py --part vla decode --cache /tmp/rp_cache \
        --threads 1 --clock cpu   # CPU time on one thread: less distorted by other jobs

`--decode-scale 0.1` is a smoke run (a ~13 M-parameter model, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import time_interleaved  # noqa: E402  (bench/runtime.py)


def quantiles(xs: list[float]) -> tuple[float, float]:
    """p50 and p90 of `xs` (seconds)."""
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
    return statistics.median(xs), q[8]


def table(rows: list[tuple[str, str, list[float]]], what: str) -> list[str]:
    """Markdown rows (group, variant, seconds): p50, p90, p50 against the group's fastest dense
    variant (one whose name starts with 'dense')."""
    out = [
        f"| {what} | variant | n | p50 ms | p90 ms | p50 vs dense |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group in dict.fromkeys(g for g, _, _ in rows):
        mine = [(v, t) for g, v, t in rows if g == group]
        base = min(quantiles(t)[0] for v, t in mine if v.startswith("dense"))
        for v, t in mine:
            p50, p90 = quantiles(t)
            out.append(f"| {group} | {v} | {len(t)} | {p50 * 1e3:.2f} | {p90 * 1e3:.2f} | "
                       f"{p50 / base:.2f}x |")  # fmt: skip
    return out


# --- the embedded VLA's policy step -------------------------------------------------------------


def build_vla_artifact(out: Path, rank: int) -> Path:
    """`vla-prune --method magnitude --pattern 2:4 --rank RANK -o OUT` in this process."""
    from vla_pruned_ros.cli.prune import main as prune_main

    argv = ["--method", "magnitude", "--pattern", "2:4", "--rank", str(rank), "-o", str(out)]
    with contextlib.redirect_stdout(sys.stderr):
        if prune_main(argv) != 0:
            raise SystemExit("vla-prune failed")
    return out


def vla_rows(tasks: list[str], reps: int, cold_reps: int, rank: int, work: Path,
             clock: Callable[[], float]) -> tuple[list, list[str]]:  # fmt: skip
    from vla_pruned_ros.compression.kernels import kernel_unavailable_reason
    from vla_pruned_ros.models.registry import load_policy
    from vla_pruned_ros.sim import make_task

    t0, art = time.perf_counter(), work / f"mag24_r{rank}"
    built = "reused" if (art / "manifest.json").is_file() else ""
    if not built:
        build_vla_artifact(art, rank)
        built = f"built in {time.perf_counter() - t0:.0f} s"
    notes = [f"VLA artifact (vla-prune --method magnitude --pattern 2:4 --rank {rank}) {built}; "
             f"kernel: {kernel_unavailable_reason() or 'compiled'}"]  # fmt: skip
    rows = []
    for task_name in tasks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            policies = {
                "dense (shipped)": load_policy("embedded", task_name),
                f"materialize r={rank}": load_policy(str(art), task_name, mode="materialize"),
                f"sparse r={rank}": load_policy(str(art), task_name, mode="sparse"),
            }
        modes = policies[f"sparse r={rank}"].model.artifact["layer_modes"]
        counts = {m: list(modes.values()).count(m) for m in sorted(set(modes.values()))}
        notes.append(f"{task_name}: sparse artifact's layer modes {counts}")
        task = make_task(task_name)
        try:
            obs = [task.reset(seed) for seed in range(8)]
        finally:
            task.close()
        frames = [o.image for o in obs]
        instruction = obs[0].instruction

        def step(policy, counter: list[int], cold: bool, frames=frames, text=instruction) -> None:
            if cold:  # a new instruction: the text encoder runs as well (cache emptied)
                policy._text_cache.clear()
            policy.predict(frames[counter[0] % len(frames)], text)
            counter[0] += 1

        for cold in (False, True):
            calls: dict[str, Callable[[], None]] = {}
            for name, policy in policies.items():
                counter = [0]
                step(policy, counter, cold)  # warm-up (and the instruction's features)
                calls[name] = lambda p=policy, c=counter, k=cold: step(p, c, k)
            times = time_interleaved(calls, cold_reps if cold else reps, clock=clock)
            group = f"{task_name}, {'new instruction' if cold else 'cached instruction'}"
            rows += [(group, name, t) for name, t in times.items()]
            print(f"vla {group} done", file=sys.stderr)
    return rows, notes


# --- per-token decode of the synthetic 1.1B checkpoint ------------------------------------------


def decode_rows(tokens: int, prompt: int, rank: int, scale: float, work: Path,
                dense_dtypes: list[str],
                clock: Callable[[], float]) -> tuple[list, list[str]]:  # fmt: skip
    import stream_1b
    from transformers import LlamaForCausalLM

    from vla_pruned_ros.models.hf_checkpoint import compress_checkpoint, load_checkpoint_artifact

    if scale != 1.0:
        for k in ("hidden_size", "intermediate_size"):
            stream_1b.SHAPE[k] = int(stream_1b.SHAPE[k] * scale) // 64 * 64
        stream_1b.SHAPE["num_hidden_layers"] = max(1, round(22 * scale))
    folder, art = work / f"llama_x{scale:g}", work / f"llama_x{scale:g}_r{rank}"
    done = {"written": "reused", "compressed": "reused"}
    t0 = time.perf_counter()
    if not (folder / "model.safetensors.index.json").is_file():
        stream_1b.write_synthetic(folder)
        done["written"] = f"written in {time.perf_counter() - t0:.0f} s"
    t0 = time.perf_counter()
    if not (art / "manifest.json").is_file():
        compress_checkpoint(folder, art, "2:4", rank, svd="randomized", factor_dtype="float16",
                            progress=False)  # fmt: skip
        done["compressed"] = f"compressed in {time.perf_counter() - t0:.0f} s"
    notes = [
        f"synthetic checkpoint ({stream_1b.SHAPE}) {done['written']}; its 2:4 + r={rank} "
        f"artifact (randomized SVD, fp16 values and factors) {done['compressed']}"
    ]
    models: dict[str, torch.nn.Module] = {}
    for name in dense_dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        models[f"dense {name}"] = LlamaForCausalLM.from_pretrained(folder,
                                                                   dtype=dtype).eval()  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparse = load_checkpoint_artifact(art, mode="sparse", dtype=torch.float32)
    modes = sparse.artifact["layer_modes"]
    counts = {m: list(modes.values()).count(m) for m in sorted(set(modes.values()))}
    notes.append(f"sparse artifact's layer modes {counts}")
    models[f"sparse r={rank}"] = sparse.eval()
    from vla_pruned_ros.compression.memory import resident_bytes

    notes.append("resident: " + ", ".join(f"{k} {resident_bytes(m) / 1e9:.2f} GB"
                                          for k, m in models.items()))  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    vocab = stream_1b.SHAPE["vocab_size"]
    ids = torch.randint(0, vocab, (1, prompt + tokens + 1), generator=gen)
    state: dict[str, dict] = {}
    calls: dict[str, Callable[[], None]] = {}

    def one(name: str) -> None:
        s = state[name]
        pos = s["pos"]
        out = models[name](ids[:, pos : pos + 1], past_key_values=s["cache"], use_cache=True)
        s["cache"], s["pos"] = out.past_key_values, pos + 1

    with torch.inference_mode():
        for name, model in models.items():  # the prompt, then one token as warm-up
            out = model(ids[:, :prompt], use_cache=True)
            state[name] = {"cache": out.past_key_values, "pos": prompt}
            one(name)
            calls[name] = lambda n=name: one(n)
        times = time_interleaved(calls, tokens, clock=clock)
    params = sum(p.numel() for p in next(iter(models.values())).parameters())
    group = f"{params / 1e9:.2f}B, 1 token"
    return [(group, name, t) for name, t in times.items()], notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", nargs="+", choices=["vla", "decode"], default=["vla"])
    parser.add_argument("--tasks", nargs="+", default=["nav", "manip"])
    parser.add_argument("--reps", type=int, default=200, help="policy steps per variant")
    parser.add_argument("--cold-reps", type=int, default=40, help="steps with a new instruction")
    parser.add_argument("--rank", type=int, default=16, help="the VLA artifact's GLUESTICK rank")
    parser.add_argument("--decode-tokens", type=int, default=12)
    parser.add_argument("--decode-prompt", type=int, default=8)
    parser.add_argument("--decode-rank", type=int, default=64)
    parser.add_argument("--decode-scale", type=float, default=1.0,
                        help="shrink the width and depth (1.0: the 1.1B shape)")  # fmt: skip
    parser.add_argument("--decode-dense", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the artifacts and checkpoint here and reuse them "
                        "(default: a temporary folder)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: time.process_time (use with --threads 1)")  # fmt: skip
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    load0, start = os.getloadavg(), dt.datetime.now(dt.UTC)
    lines, notes = [], []
    with contextlib.ExitStack() as stack:
        tmp = args.cache or stack.enter_context(tempfile.TemporaryDirectory(prefix="rt_policy_"))
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        if "vla" in args.part:
            rows, n = vla_rows(args.tasks, args.reps, args.cold_reps, args.rank, tmp, clock)
            loadv = os.getloadavg()
            lines += ["", f"Load average after the policy steps: {loadv[0]:.1f}", "",
                      *table(rows, "policy step")]  # fmt: skip
            notes += n
        if "decode" in args.part:
            rows, n = decode_rows(args.decode_tokens, args.decode_prompt, args.decode_rank,
                                  args.decode_scale, tmp, args.decode_dense, clock)  # fmt: skip
            lines += ["", *table(rows, "decode")]
            notes += n
    load1 = os.getloadavg()
    head = [
        f"{start:%Y-%m-%d %H:%M}-{dt.datetime.now(dt.UTC):%H:%M} UTC, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock, load average {load0[0]:.1f} "
        f"before / {load1[0]:.1f} after (ratios, not absolute times, are the result).",
        "",
        "    "
        + " ".join([sys.executable.split("/")[-1] + " bench/runtime_policy.py", *sys.argv[1:]]),
    ]
    text = "\n".join([*head, *lines, "", *(f"- {n}" for n in notes)]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
