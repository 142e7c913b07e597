"""`vla-eval`: evaluate policies in closed loop.

vla-eval sim --task nav --model embedded --episodes 200 --seed 0 --json results/nav.json
vla-eval sim --task nav --episodes 200 --ray          # as Ray tasks on this machine's cores
vla-eval sweep --ray auto --num-gpus 1               # every cell on a Ray cluster, a GPU per task
vla-eval bag runs/bags/ --model embedded --model ART --json out/fleet.json --ray  # a folder of bags
vla-eval bag BAG --model embedded --model ARTIFACT --json out/replay.json
vla-eval bag BAG --model ART --adapter openvla --trust-remote-code \
    --adapter-options '{action_map: {names: [linear_x, angular_z], order: [x, yaw]}}' --json o.json
vla-eval gain --task manip --write vla_pruned_ros/models/weights/embedded_vla
                                     # calibrate the action gain on calibration scenes
vla-eval sweep                       # the pruning table of config/sweep.yaml
vla-eval divergence                  # divergence-guided structured pruning (config/divergence.yaml)
vla-eval sweep --episodes 20 --methods magnitude --ranks 64   # a quick look
vla-eval sweep --model ~/models/my_vla --adapter openvla --trust-remote-code --tasks nav --ranks 8 \
    --adapter-options '{action_map: {names: [linear_x, angular_z], order: [x, yaw]}}'
                                     # the same table on your own checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vla_pruned_ros.cli.adapter_args import adapter_kwargs, add_adapter_arguments
from vla_pruned_ros.evaluation.closed_loop import (
    EvalJob,
    EvaluationFailed,
    adapter_fields,
    calibration_seeds,
    heldout_seeds,
    run_jobs,
    shared_model,
)
from vla_pruned_ros.evaluation.parallel import LOCAL, ClusterUnavailable, Parallel
from vla_pruned_ros.evaluation.stats import summarize
from vla_pruned_ros.sim.registry import TASKS


def evaluate(task: str, model: str, episodes: int, seed: int, heldout_phrasing: int,
             supersample: int | None = None, scenes: str = "heldout",
             action_gain: float | None = None, gate: str = "none",
             options: Parallel | None = None, loader: dict | None = None,
             mode: str | None = None) -> dict:  # fmt: skip
    """`episodes` held-out scenes (or calibration scenes, for tuning) with training phrasings,
    plus `heldout_phrasing` of the same scenes with held-out phrasings (their own split).
    `loader`: load_policy's adapter keyword arguments (cli/adapter_args.adapter_kwargs)."""
    if supersample is None:
        from vla_pruned_ros.sim.base import SUPERSAMPLE as supersample
    if scenes not in ("heldout", "calibration"):
        raise ValueError(f"scenes must be 'heldout' or 'calibration', not {scenes!r}")
    seeds = (heldout_seeds if scenes == "heldout" else calibration_seeds)(seed, episodes)
    fields = {**adapter_fields(loader or {}), "mode": mode}
    where = shared_model(model)
    jobs = [EvalJob(task, where, s, phrasing, supersample, action_gain, gate, **fields)
            for phrasing, chosen in (("train", seeds), ("heldout", seeds[:heldout_phrasing]))
            for s in chosen]  # fmt: skip
    records = run_jobs(jobs, options or Parallel(), f"{task} {model}")
    main = [r for r in records if r["phrasing"] == "train"]
    held = [r for r in records if r["phrasing"] == "heldout"]
    summary = summarize(main)
    if records:  # what the policy holds in memory (resident), the same in every episode
        summary["model_memory_bytes"] = records[0]["model_memory_bytes"]
    if held:
        summary["heldout_phrasing"] = summarize(held)
    return {"task": task, "model": model, "seed": seed, "supersample": supersample,
            "scenes": scenes, "action_gain": action_gain, "gate": gate,
            "summary": summary, "episodes": records}  # fmt: skip


def _print(result: dict) -> None:
    s = result["summary"]
    lo, hi = s["success"]["ci95"]
    scenes = "calibration" if result.get("scenes") == "calibration" else "held-out"
    gain = "" if result.get("action_gain") is None else f", action gain {result['action_gain']}"
    print(f"{result['task']} / {result['model']}: {s['episodes']} episodes ({scenes} scenes{gain})")
    print(f"  success        {s['success']['rate']:.1%}  (95% CI {lo:.1%}-{hi:.1%})")
    ulo, uhi = s["unsafe"]["ci95"]
    print(f"  unsafe         {s['unsafe']['rate']:.1%}  (95% CI {ulo:.1%}-{uhi:.1%})")
    print(f"  collisions/ep  {s['collisions_per_episode']:.2f}")
    for cat, v in s["violations_per_episode"].items():
        print(f"  {cat:14s} {v:.2f} per episode")
    if "spl" in s:
        print(f"  SPL            {s['spl']:.3f}")
    if "heldout_phrasing" in s:
        h = s["heldout_phrasing"]
        print(f"  held-out phrasing success {h['success']['rate']:.1%} ({h['episodes']} episodes)")
    lat = s["latency_ms"]
    print(f"  step latency   p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
    if "model_memory_bytes" in s:
        print(f"  model memory   {s['model_memory_bytes'] / 1e6:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="closed-loop episodes in the MuJoCo tasks")
    sim.add_argument("--task", choices=TASKS, required=True)
    sim.add_argument("--model", default="embedded")
    sim.add_argument("--episodes", type=int, default=200)
    sim.add_argument(
        "--heldout-phrasing",
        type=int,
        default=None,
        help="episodes with held-out phrasings (default: half of --episodes)",
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--mode", default=None,
                     help="runtime mode of an artifact (default: the loader's)")  # fmt: skip
    add_adapter_arguments(sim)
    _parallel_arguments(sim, defaults=True)
    sim.add_argument(
        "--supersample",
        type=int,
        default=None,
        help="camera: render N times larger and area-average down (default: the simulator's)",
    )
    sim.add_argument(
        "--scenes",
        choices=["heldout", "calibration"],
        default="heldout",
        help="held-out scenes (report) or calibration scenes (tuning; never held-out ones)",
    )
    sim.add_argument(
        "--action-gain",
        type=float,
        default=None,
        help="override the model's calibrated action gain (default: the model's own)",
    )
    sim.add_argument(
        "--gate",
        choices=["none", "stop", "direction"],
        default="none",
        help="run the safety monitor's gate in the loop (evaluation/gated_loop.py): none, stop "
        "(stop-and-hold) or direction (direction-aware zones); limits from config/safety*.yaml",
    )
    sim.add_argument("--json", type=Path)
    gain = sub.add_parser("gain", help="calibrate the action gain on calibration scenes")
    gain.add_argument("--task", choices=TASKS, required=True)
    gain.add_argument("--model", default="embedded")
    gain.add_argument("--gains", default="1,1.3,1.6,2,2.5,3", help="comma-separated")
    gain.add_argument("--episodes", type=int, default=400, help="calibration scenes per gain")
    gain.add_argument("--seed", type=int, default=0)
    _parallel_arguments(gain, defaults=True)
    gain.add_argument("--json", type=Path, help="default: results/action_gain_TASK.json")
    gain.add_argument("--plot", type=Path, help="default: docs/action_gain_TASK.png")
    gain.add_argument("--write", type=Path, metavar="FOLDER",
                      help="store the chosen gain in this saved model's config.json")  # fmt: skip
    sweep = sub.add_parser("sweep", help="dense vs pruned vs GLUESTICK ranks, both tasks")
    _table_arguments(sweep, "config/sweep.yaml")
    sweep.add_argument("--model", help="'embedded', a saved embedded VLA, or your own "
                       "checkpoint folder (then --adapter and its options; default: the "
                       "config's)")  # fmt: skip
    add_adapter_arguments(sweep)
    sweep.add_argument("--methods", nargs="+")
    sweep.add_argument("--ranks", nargs="+", help="integers, energy:F or budget:MB, for every "
                       "pattern (the config's pattern_ranks then do not apply)")  # fmt: skip
    sweep.add_argument("--patterns", nargs="+", help="2:4, 4:8, unstructured:0.7, ...")
    sweep.add_argument("--corrections", nargs="+", choices=("svd", "activation"))
    sweep.add_argument(
        "--factor-dtype",
        nargs="+",
        choices=("float16", "int8", "float32"),
        help="the correction factors' dtypes (each rank policy in each)",
    )
    sweep.add_argument("--calib-scenes", type=int,
                       help="expert training scenes per task that Wanda, SparseGPT and the "
                       "activation correction calibrate on")  # fmt: skip
    sweep.add_argument("--damp", type=float, help="activation correction: damping of X^T X")
    sweep.add_argument("--conv", action="store_true", default=None,
                       help="also prune the vision convolutions (names get _conv; the "
                       "embedded VLA only)")  # fmt: skip
    sweep.add_argument(
        "--heldout-phrasing",
        type=int,
        help="episodes per cell with held-out instruction templates (0: none)",
    )
    sweep.add_argument("--artifacts-dir", help="where the variants' artifacts are cached")
    sweep.add_argument("--cells-dir", help="where finished cells are cached")
    sweep.add_argument(
        "--render-only",
        action="store_true",
        help="re-render markdown and plot from the results JSON; run nothing",
    )
    bag = sub.add_parser("bag", help="offline replay of bags' frames through models (no DDS)")
    bag.add_argument("bag", type=Path, nargs="+",
                     help="a bag, several, or folders of bags (one combined report)")  # fmt: skip
    bag.add_argument(
        "--model",
        action="append",
        required=True,
        help="'embedded' or an artifact folder; repeat to compare",
    )
    bag.add_argument("--reference", help="model the others are compared to (default: first)")
    bag.add_argument(
        "--task", choices=TASKS, help="default: from the recorded actions' action_space"
    )
    add_adapter_arguments(bag)
    _parallel_arguments(bag, defaults=True)
    bag.add_argument("--json", type=Path, required=True)
    bag.add_argument("--markdown", type=Path, help="default: next to --json")
    bag.add_argument("--plot", type=Path, help="default: next to --json")
    div = sub.add_parser("divergence", help="divergence-guided structured pruning vs baselines")
    _table_arguments(div, "config/divergence.yaml")
    args = parser.parse_args(argv)
    if args.command == "divergence":
        return _divergence(args, argv)
    if args.command == "sweep":
        return _sweep(args, argv)
    if args.command == "bag":
        return _bag(args)
    if args.command == "gain":
        return _gain(args)
    held = args.episodes // 2 if args.heldout_phrasing is None else args.heldout_phrasing
    try:
        result = evaluate(args.task, args.model, args.episodes, args.seed, held,
                          args.supersample, args.scenes, args.action_gain, args.gate,
                          _parallel(args), adapter_kwargs(args), args.mode)  # fmt: skip
    except (FileNotFoundError, ValueError, ClusterUnavailable, EvaluationFailed) as err:
        print(f"vla-eval: {err}", file=sys.stderr)
        return 2
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"  written to {args.json}")
    return 0


def _parallel_arguments(sub: argparse.ArgumentParser, defaults: bool) -> None:
    """Where the work runs (evaluation/parallel.py). `defaults`: Parallel's own defaults; else
    None, so a table's config file decides."""
    base = Parallel()
    pick = (lambda v: v) if defaults else (lambda v: None)  # noqa: E731
    sub.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                     help="run as Ray tasks: on this machine's cores (no ADDRESS), or on a "
                     "cluster (auto, HOST:PORT, ray://HOST:10001); default: here")  # fmt: skip
    sub.add_argument("--num-cpus", type=float, default=pick(base.num_cpus),
                     help="CPUs (and torch threads) per task (default %(default)s)")  # fmt: skip
    sub.add_argument("--num-gpus", type=float, default=pick(base.num_gpus),
                     help="GPUs per Ray task, fractions allowed (default %(default)s)")  # fmt: skip
    sub.add_argument("--shard-episodes", type=int, default=pick(base.shard_episodes),
                     help="episodes per task (default %(default)s)")  # fmt: skip


def _parallel(args: argparse.Namespace) -> Parallel:
    return Parallel(args.ray, args.num_cpus, args.num_gpus, shard_episodes=args.shard_episodes)


def _table_arguments(sub: argparse.ArgumentParser, config: str) -> None:
    """What the table-making commands share: their parameter file and its common overrides."""
    sub.add_argument("--config", type=Path, default=None,
                     help=f"parameters (default: the package's {config})")  # fmt: skip
    sub.add_argument("--episodes", type=int)
    sub.add_argument("--tasks", nargs="+", choices=TASKS)
    _parallel_arguments(sub, defaults=False)
    sub.add_argument("--json", help="results JSON (default from the config)")
    sub.add_argument("--markdown", help="results markdown (default from the config)")
    sub.add_argument("--plots-dir")


def _table_overrides(args: argparse.Namespace) -> dict:
    """The command line's overrides of a table's config (None: the file's value)."""
    keys = ("episodes", "tasks", "json", "markdown", "plots_dir", "ray", "num_cpus", "num_gpus",
            "shard_episodes")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def _gain(args: argparse.Namespace) -> int:
    from vla_pruned_ros.evaluation import action_gain

    try:
        gains = [float(g) for g in args.gains.split(",") if g.strip()]
        result = action_gain.calibrate(args.task, args.model, gains, args.episodes, args.seed,
                                       _parallel(args))  # fmt: skip
    except (FileNotFoundError, ValueError, ClusterUnavailable, EvaluationFailed) as err:
        print(f"vla-eval: {err}", file=sys.stderr)
        return 2
    first, last = result["seeds"]
    print(f"{args.task} / {args.model}: calibration scenes {first}-{last}")
    print("  gain   success (95% CI)          unsafe (95% CI)")
    for row in result["rows"]:
        s, u = row["success"], row["unsafe"]
        mark = "  <- chosen" if row["gain"] == result["chosen"] else ""
        print(f"  {row['gain']:<5g}  {s['rate']:6.1%} ({s['ci95'][0]:.1%}-{s['ci95'][1]:.1%})"
              f"   {u['rate']:6.1%} ({u['ci95'][0]:.1%}-{u['ci95'][1]:.1%}){mark}")  # fmt: skip
    json_path = args.json or Path(f"results/action_gain_{args.task}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    png = action_gain.plot(result, args.plot or Path(f"docs/action_gain_{args.task}.png"))
    print(f"  written: {json_path}, {png}")
    if args.write:
        try:
            path = action_gain.write_gain(args.write, args.task, result["chosen"])
        except (FileNotFoundError, ValueError) as err:
            print(f"vla-eval: {err}", file=sys.stderr)
            return 2
        print(f"  action gain {result['chosen']} for {args.task} stored in {path}")
    return 0


def _bag(args: argparse.Namespace) -> int:
    """One bag: its report as before. Several: bags side by side as work items, one combined
    report (totals per model, then each bag) with a plot per bag."""
    import os

    from vla_pruned_ros.evaluation import bag_fleet
    from vla_pruned_ros.evaluation.bag_report import markdown, plot

    try:
        bags = bag_fleet.bag_paths(args.bag)
        combined = bag_fleet.replay_bags(bags, args.model, args.task, args.reference,
                                         adapter_kwargs(args), _parallel(args))  # fmt: skip
    except (OSError, ValueError, ClusterUnavailable) as err:
        print(f"vla-eval: {err}", file=sys.stderr)
        return 2
    single = len(bags) == 1 and len(args.bag) == 1 and bags[0] == args.bag[0]
    if single and combined["failed"]:
        print(f"vla-eval: {next(iter(combined['failed'].values()))}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    md_path = args.markdown or args.json.with_suffix(".md")

    def rel(path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), md_path.resolve().parent)).as_posix()

    if single:
        result = combined["bags"][0]
        png = plot(result, args.plot or args.json.with_suffix(".png"))
        text = markdown(result) + f"\n![replay]({rel(png)})\n"
    else:
        result = combined
        folder = args.plot or args.json.with_name(args.json.stem + "_plots")
        plots = {r["bag"]: rel(plot(r, folder / f"{i:02d}_{Path(r['bag']).name}.png"))
                 for i, r in enumerate(combined["bags"])}  # fmt: skip
        text = bag_fleet.markdown(combined, plots)
        png = folder
    args.json.write_text(json.dumps(result, indent=1))
    md_path.write_text(text)
    print(text)
    print(f"written: {args.json}, {md_path}, {png}")
    if result["error"]:
        print(f"vla-eval: {result['error']} (results up to there are written)", file=sys.stderr)
        return 1
    return 0


def _divergence(args: argparse.Namespace, argv: list[str] | None) -> int:
    from vla_pruned_ros.evaluation import divergence_sweep as ds
    from vla_pruned_ros.paths import package_file

    config = args.config or package_file("config/divergence.yaml")
    try:
        cfg = ds.DivergenceConfig.from_file(config, **_table_overrides(args))
        result = ds.run(cfg)
    except (OSError, ValueError, ClusterUnavailable) as err:
        print(f"vla-eval: {err}", file=sys.stderr)
        return 2
    command = "vla-eval " + " ".join(sys.argv[1:] if argv is None else argv)
    if not _has_dense(result, "name"):
        return _failed(result)
    _write_table(result, cfg, ds.markdown(result, command), ds.plot(result, Path(cfg.plots_dir)))
    return _failed(result)


def _has_dense(result: dict, key: str) -> bool:
    """Whether the dense baseline survived (the tables are relative to it)."""
    return any(v[key] == "dense" for v in result["variants"])


def _failed(result: dict) -> int:
    """Exit status of a table: 1 with each failed cell and its error on stderr, else 0."""
    for f in result.get("failed", []):
        print(f"vla-eval: cell {f['variant']} / {f['task']} / {f['phrasing']} failed: "
              f"{f['error']}", file=sys.stderr)  # fmt: skip
    return 1 if result.get("failed") else 0


def _write_table(result: dict, cfg, text: str, image: Path) -> None:
    """Results JSON, markdown (with the plot linked relative to it; what people wrote below
    the page's hand-written mark is kept), and the table on stdout."""
    import os

    from vla_pruned_ros.evaluation.report import keep_hand_written
    from vla_pruned_ros.paths import atomic_write

    out, md = Path(cfg.json), Path(cfg.markdown)
    for path in (out, md):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(result, indent=1))
    rel = Path(os.path.relpath(image.resolve(), md.resolve().parent)).as_posix()
    atomic_write(md, keep_hand_written(text + f"\n![{image.stem}]({rel})\n", md))
    print(text)
    print(f"written: {out}, {md}, {image}")


def _sweep_adapter_overrides(args: argparse.Namespace) -> dict:
    """The adapter flags given, as the sweep config's keys (none given: the file decides)."""
    from vla_pruned_ros.cli.adapter_args import adapter_parameters

    given = adapter_parameters(args)
    if "adapter_options" in given:
        given["adapter_options"] = json.loads(str(given["adapter_options"]))
    return given


def _sweep(args: argparse.Namespace, argv: list[str] | None) -> int:
    from vla_pruned_ros.evaluation.report import markdown, plot
    from vla_pruned_ros.evaluation.sweep import SweepConfig, run_sweep
    from vla_pruned_ros.paths import package_file

    config = args.config or package_file("config/sweep.yaml")
    try:
        cfg = SweepConfig.from_file(config, methods=args.methods, ranks=args.ranks,
                                    pattern_ranks={} if args.ranks else None,
                                    patterns=args.patterns, corrections=args.corrections,
                                    factor_dtype=args.factor_dtype,
                                    calib_scenes=args.calib_scenes, damp=args.damp,
                                    conv=args.conv,
                                    heldout_phrasing=args.heldout_phrasing,
                                    artifacts_dir=args.artifacts_dir, cells_dir=args.cells_dir,
                                    model=args.model, **_sweep_adapter_overrides(args),
                                    **_table_overrides(args))  # fmt: skip
        if args.render_only:
            result = json.loads(Path(cfg.json).read_text())
        else:
            result = run_sweep(cfg)
    except (OSError, ValueError, ClusterUnavailable) as err:
        print(f"vla-eval: {err}", file=sys.stderr)
        return 2
    command = "vla-eval " + " ".join(sys.argv[1:] if argv is None else argv)
    if not _has_dense(result, "name"):
        return _failed(result)
    _write_table(result, cfg, markdown(result, command), plot(result, Path(cfg.plots_dir)))
    return _failed(result)


if __name__ == "__main__":
    sys.exit(main())
