"""`vla-prune`: prune a VLA, recover it with GLUESTICK, and write a checksummed artifact.

vla-prune --method wanda --pattern 2:4 --rank 64 --output artifacts/wanda24_r64
vla-prune --method magnitude --pattern unstructured:0.5 --energy 0.9 --factor-dtype int8 -o out
vla-prune --model ~/models/my_vla --pattern 2:4 --rank 256 -o out   # a local Hugging Face folder,
                                                                     # streamed layer by layer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vla_pruned_ros.compression import METHODS, memory_report
from vla_pruned_ros.compression.quantize import FACTOR_DTYPES
from vla_pruned_ros.models.hf_checkpoint import is_hf_folder


def memory_table(report: dict, default_mode: str | None = None) -> str:
    """A small human table of a memory_report (MB, and ratios), and what loading the artifact
    in the default mode will hold in memory (`default_mode`, a `describe_expected` line)."""
    mb = 1e6
    rows = [
        ("dense fp32", report["dense_fp32_bytes"] / mb),
        ("dense fp16", report["dense_fp16_bytes"] / mb),
        ("pruned weights (packed)", report["pruned_packed_bytes"] / mb),
        ("GLUESTICK factors", report["factor_bytes"] / mb),
        ("rest of the model", report["other_bytes"] / mb),
        ("total", report["total_bytes"] / mb),
    ]
    lines = [f"  {name:26s} {value:9.2f} MB" for name, value in rows]
    lines.append(f"  {'ratio to dense fp16':26s} {report['ratio_to_dense_fp16']:9.3f}")
    if default_mode:
        lines.append(f"  loaded by default: {default_mode}")
    return "\n".join(lines)


def default_mode_line(folder: Path, factory_bytes: int = 0) -> str:
    """What `load_artifact(folder)` (the default mode, on CPU) will hold, from the files."""
    from vla_pruned_ros.compression import read_manifest
    from vla_pruned_ros.compression.runtime_modes import describe_expected, expected_resident

    return describe_expected(expected_resident(folder, read_manifest(folder)), factory_bytes)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-prune", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="embedded",
        help="'embedded' (the shipped VLA), the folder of a saved embedded VLA, or a local "
        "Hugging Face model folder (streamed layer by layer; magnitude + a fixed rank)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the checkpoint's own modelling code (never the default)",
    )
    p.add_argument("--shard-mb", type=float, default=64, help="artifact shard size (streaming)")
    p.add_argument("--method", choices=METHODS, default="magnitude")
    p.add_argument("--pattern", default="2:4", help="'2:4', '4:8' or 'unstructured:0.5'")
    rank = p.add_mutually_exclusive_group()
    rank.add_argument("--rank", type=int, default=None, help="one GLUESTICK rank for all layers")
    rank.add_argument("--energy", type=float, help="per layer, keep this fraction of gap energy")
    rank.add_argument("--budget-mb", type=float, help="total factor budget in MB")
    rank.add_argument(
        "--activation-budget-mb",
        type=float,
        help="total factor budget in MB, spent by output error removed (--correction activation)",
    )
    p.add_argument("--svd", choices=["exact", "randomized"], default="exact")
    p.add_argument(
        "--correction",
        choices=["svd", "activation"],
        default="svd",
        help="svd: the paper's (weight error); activation: the output error on the calibration "
        "inputs (--calib-scenes, --calib-folder, --calib-bag; --calib-texts for checkpoints)",
    )
    p.add_argument(
        "--correction-damp",
        type=float,
        default=0.01,
        help="activation correction: damping added to X^T X, as a fraction of its mean diagonal",
    )
    p.add_argument("--factor-dtype", choices=sorted(FACTOR_DTYPES), default="float16")
    p.add_argument("--weight-dtype", choices=["float16", "bfloat16"], default="float16",
                   help="the stored values of a checkpoint's layers; bfloat16 with the adapter "
                   "option dtype=bfloat16 lets a CPU with AMX-BF16 multiply many tokens in "
                   "tiles (checkpoint folders only)")  # fmt: skip
    p.add_argument("--include", nargs="*", default=None, help="module-name globs to prune")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="module-name globs to keep dense, added to the defaults (checkpoints: "
                   "heads, embeddings, vision towers, connectors/projectors)")  # fmt: skip
    p.add_argument("--adapter", default=None,
                   help="checkpoints: the adapter the artifact names for deployment (default: "
                   "openvla for a checkpoint with norm_stats, else none)")  # fmt: skip
    p.add_argument("--adapter-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option stored with --adapter (VALUE parsed as JSON when it is); "
                   "repeatable")  # fmt: skip
    p.add_argument("--no-default-exclude", action="store_true",
                   help="checkpoints: drop the default excludes (only --exclude stays "
                   "dense)")  # fmt: skip
    p.add_argument(
        "--calib-scenes",
        type=int,
        default=8,
        help="expert episodes per task (training scenes) for Wanda/SparseGPT",
    )
    p.add_argument(
        "--calib-folder",
        type=Path,
        help="your own calibration data: images + instructions.txt/.json",
    )
    p.add_argument(
        "--calib-bag",
        type=Path,
        help="your own calibration data: a bag's camera and instruction topics",
    )
    p.add_argument("--calib-task", help="the action head your data is for (default: every head)")
    p.add_argument(
        "--calib-texts",
        type=Path,
        help="Wanda/SparseGPT on a checkpoint folder: calibration texts, one per line",
    )
    p.add_argument(
        "--calib-prompt",
        default=None,
        help="checkpoint + --calib-folder/--calib-bag: the prompt around {instruction} "
        "(default: OpenVLA's)",
    )
    p.add_argument(
        "--conv", action="store_true", help="also prune Conv2d layers (as out x in*kh*kw matrices)"
    )
    p.add_argument("--output", "-o", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    return p  # fmt: skip


def rank_spec(args: argparse.Namespace) -> str:
    if args.energy is not None:
        return f"energy:{args.energy}"
    if args.budget_mb is not None:
        return f"budget:{args.budget_mb}"
    if args.activation_budget_mb is not None:
        return f"activation-budget:{args.activation_budget_mb}"
    return str(args.rank or 0)


def _stream(args: argparse.Namespace, folder: Path) -> int:
    """A checkpoint folder: magnitude streams tensor by tensor; Wanda/SparseGPT, and any method
    with --correction activation, go block by block on calibration through the model's own
    tokenizer or processor."""
    from vla_pruned_ros.models.hf_checkpoint import (
        CheckpointError,
        OnlyExclude,
        compress_checkpoint,
    )

    if args.no_default_exclude:
        args.exclude = OnlyExclude(args.exclude or ())
    try:
        if any(v is not None for v in (args.energy, args.budget_mb, args.activation_budget_mb)):
            raise ValueError("checkpoints stream with a fixed --rank (energy/budget policies need "
                             "every layer's spectrum first)")  # fmt: skip
        options = dict(svd=args.svd, factor_dtype=args.factor_dtype, overwrite=args.overwrite,
                       shard_bytes=int(args.shard_mb * 2**20),
                       weight_dtype=args.weight_dtype)  # fmt: skip
        if args.method == "magnitude" and args.correction == "svd":
            out = compress_checkpoint(
                folder, args.output, args.pattern, args.rank or 0, args.include, args.exclude,
                args.trust_remote_code, **options,
            )  # fmt: skip
        else:
            from vla_pruned_ros.models.hf_sequential import sequential_compress

            calib = checkpoint_calibration(args, folder)
            out = sequential_compress(
                folder, args.output, args.method, args.pattern, args.rank or 0, calib,
                args.include, args.exclude, trust_remote_code=args.trust_remote_code,
                correction=args.correction, damp=args.correction_damp,
                calib_source=calibration_source(args), **options,
            )  # fmt: skip
        if args.adapter or args.adapter_option:
            from vla_pruned_ros.models.hf_checkpoint import attach_deployment

            out = attach_deployment(out, folder, args.adapter, adapter_options(args.adapter_option))
    except (OSError, ValueError, CheckpointError) as err:
        print(f"vla-prune: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} from {folder}; inspect it with vla-inspect {out}")
    print(f"  loaded by default: {default_mode_line(out)}")
    return 0


def adapter_options(pairs: list[str]) -> dict[str, Any]:
    """{key: value} from KEY=VALUE strings; a VALUE that parses as JSON is stored as such."""
    import json

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--adapter-option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def checkpoint_calibration(args: argparse.Namespace, folder: Path) -> list:
    """Wanda/SparseGPT inputs for a checkpoint: texts through its tokenizer, or the user's
    images + instructions (folder or bag, at their own size) through its processor."""
    from vla_pruned_ros.models import hf_sequential as hs

    if args.calib_texts is not None:
        return hs.calibration_ids(folder, args.calib_texts, args.trust_remote_code)
    if args.calib_folder is None and args.calib_bag is None:
        what = args.method if args.method != "magnitude" else "--correction activation"
        raise ValueError(
            f"{what} on a checkpoint needs calibration: --calib-folder DIR "
            "or --calib-bag BAG (images + instructions), or --calib-texts FILE"
        )
    from vla_pruned_ros.models.adapters import OPENVLA_PROMPT
    from vla_pruned_ros.training import calibration_data as cd

    if args.calib_folder:
        images, texts = cd.frames_from_folder(args.calib_folder, size=None)
    else:
        images, texts = cd.frames_from_bag(args.calib_bag, size=None)
    print(f"[vla-prune] calibration: {len(texts)} frames of your data through {folder.name}'s "
          "processor", file=sys.stderr)  # fmt: skip
    return hs.calibration_inputs(folder, images, texts, args.calib_prompt or OPENVLA_PROMPT,
                                 args.trust_remote_code)  # fmt: skip


def calibration_source(args: argparse.Namespace) -> str:
    """Where the calibration inputs came from, in words, for the manifest."""
    if args.calib_folder is not None:
        return f"folder {args.calib_folder.resolve()}"
    if args.calib_bag is not None:
        return f"bag {args.calib_bag.resolve()}"
    if args.calib_texts is not None:
        return f"texts {args.calib_texts.resolve()}"
    return f"{args.calib_scenes} expert episodes per task (training scenes)"


def calibration_frames(args: argparse.Namespace, dense) -> dict:
    """{head: (frames, instructions)}: the user's folder or bag if given, else expert episodes
    on training scenes of the simulated tasks."""
    from vla_pruned_ros.training import calibration_data as cd

    heads = [args.calib_task] if args.calib_task else list(dense.config.action_dims)
    unknown = [h for h in heads if h not in dense.config.action_dims]
    if unknown:
        raise ValueError(f"--calib-task {unknown[0]!r}: the model's heads are "
                         f"{sorted(dense.config.action_dims)}")  # fmt: skip
    size = dense.config.image_size
    if args.calib_folder or args.calib_bag:
        if args.calib_folder:
            data = cd.frames_from_folder(args.calib_folder, size)
        else:
            data = cd.frames_from_bag(args.calib_bag, size=size)
        print(f"[vla-prune] calibration: {len(data[1])} frames of your data", file=sys.stderr)
        return dict.fromkeys(heads, data)
    from vla_pruned_ros.training.collect import expert_frames

    print(f"[vla-prune] calibration: {args.calib_scenes} expert episodes per task",
          file=sys.stderr)  # fmt: skip
    seeds = list(range(args.calib_scenes))
    return {t: expert_frames(t, seeds) for t in heads}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from vla_pruned_ros.compression.memory import unmap_large_allocations

    unmap_large_allocations()  # large freed buffers go back to the system (see its docstring)
    from vla_pruned_ros.models.embedded import DEFAULT_WEIGHTS, load_embedded
    from vla_pruned_ros.models.embedded_artifact import compress, save_embedded_artifact

    source = DEFAULT_WEIGHTS if args.model == "embedded" else Path(args.model).expanduser()
    if is_hf_folder(source):
        return _stream(args, source)
    try:
        if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
            raise ValueError(f"{args.output} exists and is not empty (use --overwrite)")
        if args.weight_dtype != "float16":
            raise ValueError("--weight-dtype applies to checkpoint folders; the embedded VLA "
                             "stores float16 values")  # fmt: skip
        if (source / "policy_preprocessor.json").is_file():
            raise ValueError(
                f"{source} is a LeRobot policy folder: vla-prune compresses transformers "
                "checkpoints and the embedded VLA, not LeRobot policies; deploy it unchanged "
                "with adapter:=lerobot"
            )
        dense = load_embedded(source)
        frames = None
        if args.method in ("wanda", "sparsegpt") or args.correction == "activation":
            frames = calibration_frames(args, dense)
        spec = rank_spec(args)
        model = compress(
            dense, args.method, args.pattern, [spec], frames, args.include, args.exclude,
            args.svd, args.factor_dtype, conv=args.conv, correction=args.correction,
            damp=args.correction_damp, calib_source=calibration_source(args),
        )[spec]  # fmt: skip
        folder = save_embedded_artifact(model, args.output, source, overwrite=args.overwrite)
    except (OSError, ValueError) as err:
        print(f"vla-prune: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {folder}  ({args.method} {args.pattern}, GLUESTICK {spec}, "
          f"factors {args.factor_dtype})")  # fmt: skip
    from vla_pruned_ros.models.embedded import FROZEN_KEYS

    state = model.state_dict()  # the frozen tables the factory provides, at fp32 on CPU
    frozen = sum(state[k].numel() * 4 for k in FROZEN_KEYS if k in state)
    print(memory_table(memory_report(model, value_bytes=2), default_mode_line(folder, frozen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
