"""The committed embedded VLA: it loads from the package, stays within its size budget, and
drives both simulated tasks in closed loop (a handful of held-out episodes, loose floor)."""

from __future__ import annotations

import pytest

from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_jobs
from vla_pruned_ros.models.embedded import DEFAULT_WEIGHTS, load_embedded
from vla_pruned_ros.sim import TASKS

EPISODES = 6


def test_committed_weights_are_small_and_load() -> None:
    weights = DEFAULT_WEIGHTS / "model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    assert (DEFAULT_WEIGHTS / "MODEL_CARD.md").is_file()
    model = load_embedded()
    assert set(model.config.action_dims) == set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_embedded_policy_solves_some_held_out_episodes(task: str) -> None:
    jobs = [EvalJob(task, "embedded", seed) for seed in heldout_seeds(500, EPISODES)]
    records = list(run_jobs(jobs))
    successes = sum(r["success"] for r in records)
    assert successes >= 2, [(r["seed"], r["success"], r["distance_to_goal"]) for r in records]


def test_predict_resizes_frames_through_the_one_frame_path_bit_identically() -> None:
    """A camera frame of another size goes through `frames.fit_frame` and then the network's
    `preprocess_images`: the action is bit-identical to the path it replaced (an OpenCV area
    resize written out in the policy), and a frame already at size is not resized at all."""
    import cv2
    import numpy as np
    import torch

    from vla_pruned_ros.frames import fit_frame
    from vla_pruned_ros.models.embedded import EmbeddedPolicy

    model = load_embedded()
    policy = EmbeddedPolicy(model, "manip")
    size = model.config.image_size
    rng = np.random.default_rng(3)
    instruction = "push the red block onto the white disc"
    for shape in ((size, size, 3), (96, 96, 3), (77, 131, 3), (240, 320, 3)):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        old = frame
        if shape[:2] != (size, size):
            old = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        assert np.array_equal(fit_frame(frame, size), old)
        with torch.inference_mode():
            text = policy.text_features(instruction)
            raw = model.act_from_features(torch.from_numpy(old).unsqueeze(0), text, "manip")
            expected = model.unnormalise(raw.float(), "manip")[0].numpy()
        assert np.array_equal(policy.predict(frame, instruction), expected), shape
    # a different frame gives a different action: the comparison above can fail
    other = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert not np.array_equal(policy.predict(other, instruction), expected)
