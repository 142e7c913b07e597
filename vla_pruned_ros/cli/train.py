"""`vla-train`: collect expert demonstrations in the MuJoCo tasks and train the embedded VLA.

    vla-train --workdir runs/embedded     # collect (cached), train, save: the shipped recipe
    vla-train --workdir runs/embedded     # again: resumes where it stopped

Seeded and resumable: the data is cached in WORKDIR/data, the model and optimiser in
WORKDIR/checkpoint.safetensors; the trained weights go to --out (fp16, no frozen table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from vla_pruned_ros.evaluation.parallel import LOCAL, Parallel
from vla_pruned_ros.models.embedded import (
    DEFAULT_WEIGHTS,
    HEAD_KINDS,
    EmbeddedVLA,
    EmbeddedVLAConfig,
    load_tokenizer,
    save_embedded,
)
from vla_pruned_ros.paths import atomic_write
from vla_pruned_ros.sim import TASKS, task_class
from vla_pruned_ros.sim.base import SUPERSAMPLE
from vla_pruned_ros.training.collect import CollectConfig, collect
from vla_pruned_ros.training.dataset import Demonstrations
from vla_pruned_ros.training.train import TrainConfig, train


def model_config(
    image_size: int = 64,
    keypoint_blocks: tuple[int, ...] = (1, 2),
    action_head: str = "mse",
    mixture_modes: int = 5,
    head_layers: int = 1,
) -> EmbeddedVLAConfig:
    """Action heads, bounds and names taken from the tasks themselves (one place for them).
    Keypoints from the 16x16 and 8x8 maps by default (MODEL_CARD.md: the loss leaves its
    plateau sooner and ends lower than with the 8x8 map alone)."""
    classes = {t: task_class(t) for t in TASKS}
    return EmbeddedVLAConfig(
        image_size=image_size,
        keypoint_blocks=tuple(keypoint_blocks),
        action_head=action_head,
        mixture_modes=mixture_modes,
        head_layers=head_layers,
        action_dims={t: len(classes[t].action_names) for t in TASKS},
        action_scale={t: [float(x) for x in classes[t].action_high] for t in TASKS},
        action_names={t: list(classes[t].action_names) for t in TASKS},
    )


def task_has_state(task: str) -> bool:
    """Whether the task's simulator defines a scene state (Task.scene_state overridden)."""
    from vla_pruned_ros.sim.base import Task

    return task_class(task).scene_state is not Task.scene_state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/embedded"))
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--episodes", type=int, default=1500, help="demonstrations per task")
    parser.add_argument(
        "--steps", type=int, default=4900, help="the shipped model's 4900 take ~50 min on 2 cores"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="collect as Ray tasks: on this machine's cores (no ADDRESS) or on a cluster "
        "(auto, ray://HOST:10001); default: in this process, one core",
    )
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument(
        "--task-cycle",
        default="manip,manip,nav",
        help="the order tasks take turns in (default: manipulation, the harder task, two steps "
        "in three; ',' alternates all tasks)",
    )
    parser.add_argument(
        "--keypoint-blocks",
        default="1,2",
        help="conv blocks whose maps give spatial-softmax keypoints ('-1': the last only, as "
        "the v2 model)",
    )
    parser.add_argument(
        "--manip-expert",
        choices=task_class("manip").experts,
        default="smooth",
        help="the manipulation expert that demonstrates (sim/manip_experts.py: smooth blends "
        "routing and pushing, so neighbouring states get similar labels; at equal training it "
        "doubled held-out success over routing; MODEL_CARD.md)",
    )
    parser.add_argument(
        "--action-head",
        choices=list(HEAD_KINDS),
        default="mse",
        help="mse: regress the action; gmm: a Gaussian mixture decoded as its likeliest mode "
        "(for demonstrations whose labels look multimodal from the image)",
    )
    parser.add_argument("--mixture-modes", type=int, default=5, help="modes of a gmm head")
    parser.add_argument(
        "--supersample",
        type=int,
        default=SUPERSAMPLE,
        help="the camera renders N times larger and area-averages down, so edges show where "
        f"they fall inside a pixel (default: the simulator's, {SUPERSAMPLE}; evaluate with "
        "the same)",
    )
    parser.add_argument(
        "--state-loss",
        type=float,
        default=0.0,
        help="weight of an auxiliary loss: a linear readout of the visual features predicts "
        "the simulator's scene state (where the named block, target and obstacles are from the "
        "pusher), so the vision stem learns to localise them; training only, not shipped "
        "(default 0: actions alone)",
    )
    args = parser.parse_args(argv)
    if args.state_loss < 0:
        parser.error(f"--state-loss must be >= 0, not {args.state_loss}")
    if args.mixture_modes < 1:
        parser.error(f"--mixture-modes must be at least 1, not {args.mixture_modes}")
    try:
        keypoints = tuple(int(b) for b in args.keypoint_blocks.split(","))
    except ValueError:
        parser.error(
            f"--keypoint-blocks takes block indices like '1,2', not {args.keypoint_blocks!r}"
        )
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    demos = {}
    for task in TASKS:
        path = args.workdir / "data" / f"{task}.safetensors"
        expert = args.manip_expert if task == "manip" else ""
        if path.exists():
            demos[task] = Demonstrations.load(path)
            cached = demos[task].meta.get("expert") or ("routing" if task == "manip" else "")
            camera = demos[task].meta.get("supersample") or 1  # older data: plain renders
            wrong = []
            if cached != expert:
                wrong.append(f"demonstrations of the {cached!r} expert, not {expert!r}")
            if camera != args.supersample:
                wrong.append(f"frames rendered with supersampling {camera}, not {args.supersample}")
            if args.state_loss > 0 and demos[task].states is None and task_has_state(task):
                wrong.append("frames without scene states (collected before they were recorded)")
            if wrong:
                parser.error(
                    f"{path} holds {' and '.join(wrong)}: use another --workdir or delete that file"
                )
        else:
            cfg = CollectConfig(task, args.episodes, expert=expert, supersample=args.supersample)
            demos[task] = collect(cfg, Parallel(args.ray) if args.ray else None)
            demos[task].save(path)
        print(f"{task}: {len(demos[task])} samples, {len(demos[task].instructions)} instructions")
    collect_s = time.monotonic() - t0
    torch.manual_seed(args.seed)
    config = model_config(
        keypoint_blocks=keypoints, action_head=args.action_head, mixture_modes=args.mixture_modes
    )
    if args.state_loss > 0:
        dims = {t: d.states.shape[1] for t, d in demos.items() if d.states is not None}
        config = dataclasses.replace(config, state_dims=dims)
    model = EmbeddedVLA.from_minilm(config)
    cycle = tuple(t for t in args.task_cycle.split(",") if t)
    cfg = TrainConfig(
        steps=args.steps, seed=args.seed, task_cycle=cycle, state_loss_weight=args.state_loss
    )
    log = train(model, load_tokenizer(), demos, cfg, args.workdir, resume=not args.no_resume)
    path = save_embedded(model, args.out)
    summary = {
        "collect_seconds": collect_s,
        "train_seconds": log.get("seconds"),
        "samples": {t: len(d) for t, d in demos.items()},
        "final_loss": {t: curve[-1][1] for t, curve in log["loss"].items() if curve},
        "weights": str(path),
        "weights_bytes": path.stat().st_size,
    }
    atomic_write(args.workdir / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
