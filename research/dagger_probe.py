"""Does on-policy data (DAgger) lift the embedded VLA's manipulation success? A probe, not the
training recipe: the shipped policy drives training scenes while the expert labels every state,
the labels join the behaviour-cloning data, and the model is fine-tuned on manipulation only.
Then `vla-eval sim --task manip --model OUT/model --episodes 200` gives the number to compare
with the model card's.

    .venv/bin/python research/dagger_probe.py --workdir runs/dagger_probe --episodes 600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vla_pruned_ros.models.embedded import load_embedded, load_tokenizer, save_embedded
from vla_pruned_ros.training.collect import CollectConfig, collect
from vla_pruned_ros.training.dataset import Demonstrations
from vla_pruned_ros.training.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/dagger_probe"))
    parser.add_argument("--bc-data", type=Path, default=Path("runs/embedded/data"))
    parser.add_argument("--model", default="embedded", help="the policy that drives and is tuned")
    parser.add_argument("--task", default="manip")
    parser.add_argument("--episodes", type=int, default=600, help="on-policy episodes")
    parser.add_argument("--first-seed", type=int, default=1500, help="after the BC scenes")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--expert", default="smooth",
                        help="the expert that labels the on-policy states: the one the BC data "
                             "came from (vla-train's default is smooth)")  # fmt: skip
    parser.add_argument("--also", nargs="*", default=[],
                        help="other tasks fine-tuned beside it on their BC data (e.g. nav), so "
                             "the shared layers do not drift away from them")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.monotonic()
    cached = args.workdir / f"dagger_{args.task}.safetensors"
    if cached.exists():
        on_policy = Demonstrations.load(cached)
    else:
        on_policy = collect(CollectConfig(args.task, args.episodes, first_seed=args.first_seed,
                                          policy=args.model, expert=args.expert))  # fmt: skip
        on_policy.save(cached)
    collect_s = time.monotonic() - t0
    demos = Demonstrations.load(args.bc_data / f"{args.task}.safetensors").merged(on_policy)
    model = load_embedded(None if args.model == "embedded" else Path(args.model))
    data = {args.task: demos}
    data.update({t: Demonstrations.load(args.bc_data / f"{t}.safetensors") for t in args.also})
    cycle = (args.task, args.task, *args.also) if args.also else ()
    cfg = TrainConfig(steps=args.steps, lr=args.lr, text_lr=args.lr / 10, warmup_steps=50,
                      seed=1, task_cycle=cycle)  # fmt: skip
    log = train(model, load_tokenizer(), data, cfg, args.workdir)
    save_embedded(model, args.workdir / "model")
    summary = {
        "on_policy_episodes": args.episodes,
        "expert": args.expert,
        "also": args.also,
        "on_policy_samples": len(on_policy),
        "policy_success_while_collecting": on_policy.meta.get("expert_success_rate"),
        "collect_seconds": collect_s,
        "train_seconds": log.get("seconds"),
        "final_loss": log["loss"][args.task][-1][1],
    }
    (args.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
