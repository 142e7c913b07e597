"""Short manipulation-only training runs, the probes MODEL_CARD.md reports under "Earlier
runs" and "Tried after v4": the keypoint probe (`--keypoint-blocks 1,2` vs `-1`,
`--schedule-steps 8000 --stop-at 700`) and the expert A/B (demonstrations of each expert,
`--schedule-steps 1500`, then `vla-eval sim --task manip --model WORKDIR/model`). Run two side
by side with `--threads 1`.

    .venv/bin/python research/manip_probe.py --data runs/ab/smooth.safetensors --expert smooth \\
        --workdir runs/ab_smooth --schedule-steps 1500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from vla_pruned_ros.cli.train import model_config
from vla_pruned_ros.models.embedded import EmbeddedVLA, load_tokenizer, save_embedded
from vla_pruned_ros.sim import task_class
from vla_pruned_ros.training.collect import CollectConfig, collect
from vla_pruned_ros.training.dataset import Demonstrations
from vla_pruned_ros.training.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="collected here if missing")
    parser.add_argument("--expert", default="routing", choices=task_class("manip").experts)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--keypoint-blocks", default="1,2")
    parser.add_argument("--schedule-steps", type=int, default=1500)
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--head-layers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--head-hidden", type=int, default=256)
    parser.add_argument("--supersample", type=int, help="camera supersampling (default: sim's)")
    parser.add_argument(
        "--state-loss", type=float, default=0.0, help="weight of the auxiliary scene-state loss"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.data.exists():
        cfg = CollectConfig("manip", 1500, expert=args.expert, supersample=args.supersample)
        collect(cfg).save(args.data)
    demos = Demonstrations.load(args.data)
    if args.state_loss > 0 and demos.states is None:
        parser.error(f"{args.data} has no scene states: collect it again (delete the file)")
    torch.manual_seed(args.seed)
    blocks = tuple(int(b) for b in args.keypoint_blocks.split(","))
    config = model_config(keypoint_blocks=blocks, head_layers=args.head_layers)
    states = {"manip": demos.states.shape[1]} if args.state_loss > 0 else {}
    config = dataclasses.replace(config, head_hidden=args.head_hidden, state_dims=states)
    model = EmbeddedVLA.from_minilm(config)
    t0 = time.monotonic()
    cfg = TrainConfig(steps=args.schedule_steps, seed=args.seed, state_loss_weight=args.state_loss)
    log = train(model, load_tokenizer(), {"manip": demos}, cfg, args.workdir, resume=False,
                stop_at=args.stop_at)  # fmt: skip
    save_embedded(model, args.workdir / "model")
    curve = log["loss"]["manip"]
    state = log["state_loss"].get("manip") or [[None, None]]
    print(json.dumps({"seconds": time.monotonic() - t0, "final_loss": curve[-1][1],
                      "final_state_loss": state[-1][1], "curve": curve[::10]}))  # fmt: skip


if __name__ == "__main__":
    main()
