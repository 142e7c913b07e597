"""How well does a trained embedded VLA's action head fit its own demonstrations, judged by the
action it would execute? For a regression head that is its training loss; for a mixture head the
NLL says little, so this measures the likeliest mode's error and prints the mixture weights of a
few samples (weights that do not move with the image mean the head has not conditioned yet).

    .venv/bin/python research/head_fit.py runs/v5/model --data runs/v5/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vla_pruned_ros.models.embedded import EmbeddedPolicy, load_embedded
from vla_pruned_ros.training.dataset import Demonstrations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="weights folder (config.json + safetensors)")
    parser.add_argument("--data", type=Path, required=True, help="vla-train's WORKDIR/data")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_embedded(args.model)
    for task, scale in model.config.action_scale.items():
        policy = EmbeddedPolicy(model, task)
        demos = Demonstrations.load(args.data / f"{task}.safetensors")
        picks = np.random.default_rng(0).choice(len(demos), args.samples, replace=False)
        errors = [
            (policy.predict(demos.images[i], demos.instructions[demos.instruction_ids[i]])
             - demos.actions[i]) / np.asarray(scale)
            for i in picks
        ]  # fmt: skip
        print(f"{task}: normalised MSE of the executed action {np.mean(np.square(errors)):.4f}")
        if model.config.action_head == "gmm":
            with torch.inference_mode():
                first = picks[:4]
                text = policy.text_features(demos.instructions[demos.instruction_ids[first[0]]])
                images = torch.from_numpy(demos.images[first])
                out = model.head_outputs(images, text.expand(len(first), -1), task)
                logits, means, _ = model.mixture(out, task)
            print("  mixture weights of 4 samples:\n", torch.softmax(logits, 1).numpy().round(2))
            print("  mode means of the first:\n", means[0].numpy().round(2))


if __name__ == "__main__":
    main()
