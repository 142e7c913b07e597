"""The behaviour-cloning loop learns a language-conditioned rule and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_pruned_ros.models.embedded import (
    EmbeddedVLA,
    EmbeddedVLAConfig,
    load_embedded,
    load_tokenizer,
    save_embedded,
)
from vla_pruned_ros.training.dataset import Demonstrations
from vla_pruned_ros.training.train import TrainConfig, train

CONFIG = EmbeddedVLAConfig(
    image_size=16,
    text_layers=1,
    channels=(8, 8),
    head_hidden=16,
    action_dims={"toy": 1},
    action_scale={"toy": [2.0]},
    action_names={"toy": ["v"]},
)


def _toy_demos(n_episodes: int = 24, frames: int = 8) -> Demonstrations:
    """Action = +1.5 toward the named colour's side: 'red' is left half, 'blue' right half."""
    rng = np.random.default_rng(0)
    images, actions, instr, episodes = [], [], [], []
    for ep in range(n_episodes):
        which = ep % 2
        for _ in range(frames):
            img = np.zeros((16, 16, 3), np.uint8)
            red_left = rng.random() < 0.5
            img[:, :8, 0 if red_left else 2] = 255
            img[:, 8:, 2 if red_left else 0] = 255
            target_left = red_left if which == 0 else not red_left
            images.append(img)
            actions.append([-1.5 if target_left else 1.5])
            instr.append(which)
            episodes.append(ep)
    return Demonstrations(
        "toy",
        np.stack(images),
        np.asarray(actions, np.float32),
        np.asarray(instr, np.int32),
        np.asarray(episodes, np.int32),
        ["go to the red side", "go to the blue side"],
    )


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _fresh() -> EmbeddedVLA:
    torch.manual_seed(0)
    return EmbeddedVLA.from_minilm(CONFIG)


def test_loss_falls_and_resume_is_exact(tmp_path: Path, tokenizer, capsys) -> None:
    demos = {"toy": _toy_demos()}
    cfg = TrainConfig(steps=100, episodes_per_batch=4, frames_per_episode=8, warmup_steps=5,
                      max_shift_px=1, checkpoint_every=50, lr=3e-3)  # fmt: skip
    full = _fresh()
    log = train(full, tokenizer, demos, cfg, tmp_path / "full")
    curve = [loss for _, loss in log["loss"]["toy"]]
    assert curve[-1] < 0.5 * curve[0], curve
    # without a terminal (pytest, nohup) the bar is off and each checkpoint prints a line
    out = capsys.readouterr().out
    assert "train step 50/100: loss toy " in out and "~0 min left" in out.splitlines()[-1], out

    half = _fresh()
    train(half, tokenizer, demos, cfg, tmp_path / "r", stop_at=50)  # an interruption
    resumed = _fresh()
    train(resumed, tokenizer, demos, cfg, tmp_path / "r")  # continues from step 50
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_saved_weights_round_trip_without_the_frozen_table(tmp_path: Path) -> None:
    model = _fresh()
    path = save_embedded(model, tmp_path)
    assert (
        path.stat().st_size
        < 2 * sum(p.numel() for n, p in model.named_parameters() if "word_embeddings" not in n)
        + 100_000
    )
    loaded = load_embedded(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), name


def test_missing_weights_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no embedded VLA weights"):
        load_embedded(tmp_path)


def test_task_cycle_gives_each_task_its_share_of_steps(tmp_path, tokenizer) -> None:
    torch.manual_seed(0)
    demos = {"toy": _toy_demos(), "other": _toy_demos()}
    demos["other"].task = "other"
    config = EmbeddedVLAConfig(**{**CONFIG.__dict__, "action_dims": {"toy": 1, "other": 1},
                                  "action_scale": {"toy": [2.0], "other": [2.0]},
                                  "action_names": {"toy": ["v"], "other": ["v"]}})  # fmt: skip
    model = EmbeddedVLA.from_minilm(config)
    cfg = TrainConfig(steps=20, episodes_per_batch=2, frames_per_episode=2, warmup_steps=2,
                      task_cycle=("toy", "toy", "toy", "other"))  # fmt: skip
    log = train(model, tokenizer, demos, cfg, tmp_path / "run", resume=False)
    steps = {t: [s for s, _ in curve] for t, curve in log["loss"].items()}
    assert all(s % 4 == 3 for s in steps["other"]) and steps["other"]
    assert all(s % 4 != 3 for s in steps["toy"]) and steps["toy"]
    with pytest.raises(ValueError, match="task_cycle names"):
        bad = TrainConfig(steps=1, task_cycle=("nav",))
        train(EmbeddedVLA.from_minilm(CONFIG), tokenizer, {"toy": _toy_demos()}, bad, tmp_path)


def _assert_same_actions(model: EmbeddedVLA, loaded: EmbeddedVLA, tokenizer) -> None:
    """A saved and reloaded model acts like the original (fp16 storage: to 5e-3)."""
    demos = _toy_demos(2, 2)
    enc = tokenizer(demos.instructions, model.config.max_text_tokens)
    images = torch.from_numpy(demos.images)
    index = torch.from_numpy(demos.instruction_ids).long()
    with torch.no_grad():
        a = model.eval()(images, enc["input_ids"], enc["attention_mask"], index, "toy")
        b = loaded(images, enc["input_ids"], enc["attention_mask"], index, "toy")
    assert torch.allclose(a, b, atol=5e-3)


def test_keypoints_from_several_blocks_round_trip(tmp_path: Path, tokenizer) -> None:
    """A model reading keypoints from the 8x8 and the final 4x4 maps saves its choice in
    config.json and comes back identical; a config.json written before the option existed
    loads as the last block only."""
    config = EmbeddedVLAConfig(**{**CONFIG.__dict__, "keypoint_blocks": (0, -1)})
    torch.manual_seed(0)
    model = EmbeddedVLA.from_minilm(config)
    d_text = model.text.config.hidden_size
    assert model.heads["toy"][0].in_features == 2 * (8 + 8) + 8 + d_text
    save_embedded(model, tmp_path / "m")
    loaded = load_embedded(tmp_path / "m")
    assert loaded.config.keypoint_blocks == (0, -1)
    _assert_same_actions(model, loaded, tokenizer)

    old = json.loads((tmp_path / "m" / "config.json").read_text())
    del old["keypoint_blocks"]
    assert EmbeddedVLAConfig.from_json(json.dumps(old)).keypoint_blocks == (-1,)
    with pytest.raises(ValueError, match="must name some of the 2 conv blocks"):
        EmbeddedVLA(EmbeddedVLAConfig(**{**config.__dict__, "keypoint_blocks": (2,)}))


def _either_way_demos(n_episodes: int = 24, frames: int = 8) -> Demonstrations:
    """Labels the image cannot explain: the same scene is demonstrated at -1.5 and at +1.5."""
    rng = np.random.default_rng(1)
    n = n_episodes * frames
    images = np.zeros((n, 16, 16, 3), np.uint8)
    images[..., 1] = 128
    actions = np.where(rng.random((n, 1)) < 0.5, -1.5, 1.5).astype(np.float32)
    episodes = np.repeat(np.arange(n_episodes), frames).astype(np.int32)
    return Demonstrations(
        "toy", images, actions, np.zeros(n, np.int32), episodes, ["go round the obstacle"]
    )


def test_a_mixture_head_picks_a_mode_where_regression_averages(tmp_path, tokenizer) -> None:
    """Why the gmm head exists: with two equally demonstrated answers, MSE learns their mean
    (a stalled robot), the mixture learns both and acts on one of them."""
    demos = {"toy": _either_way_demos()}
    cfg = TrainConfig(steps=120, episodes_per_batch=4, frames_per_episode=8, warmup_steps=5,
                      max_shift_px=0, checkpoint_every=1000, lr=3e-3)  # fmt: skip
    enc = tokenizer(demos["toy"].instructions, CONFIG.max_text_tokens)
    frames = torch.from_numpy(demos["toy"].images[:4])
    actions = {}
    for head in ("mse", "gmm"):
        torch.manual_seed(0)
        config = EmbeddedVLAConfig(**{**CONFIG.__dict__, "action_head": head, "mixture_modes": 3})
        model = EmbeddedVLA.from_minilm(config)
        train(model, tokenizer, demos, cfg, tmp_path / head, resume=False)
        save_embedded(model, tmp_path / head / "model")
        loaded = load_embedded(tmp_path / head / "model")
        assert loaded.config.action_head == head
        with torch.no_grad():
            text = loaded.encode_text(enc["input_ids"], enc["attention_mask"]).expand(4, -1)
            actions[head] = loaded.unnormalise(loaded.act_from_features(frames, text, "toy"), "toy")
    assert actions["mse"].abs().max() < 0.5, actions["mse"]
    assert (actions["gmm"].abs() > 1.2).all(), actions["gmm"]
    old = json.loads((tmp_path / "gmm" / "model" / "config.json").read_text())
    del old["action_head"], old["mixture_modes"]  # written before the option existed
    assert EmbeddedVLAConfig.from_json(json.dumps(old)).action_head == "mse"
    with pytest.raises(ValueError, match="action_head must be one of"):
        EmbeddedVLA(EmbeddedVLAConfig(**{**CONFIG.__dict__, "action_head": "diffusion"}))


def test_a_deeper_action_head_round_trips(tmp_path: Path, tokenizer) -> None:
    """head_layers stacks hidden layers in each action head; config.json keeps the choice,
    weights come back identical, and a config.json from before the option loads as one layer
    (the shape of the shipped weights)."""
    config = EmbeddedVLAConfig(**{**CONFIG.__dict__, "head_layers": 3})
    torch.manual_seed(0)
    model = EmbeddedVLA.from_minilm(config)
    linears = [m for m in model.heads["toy"] if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 16, 16, 1]
    save_embedded(model, tmp_path / "m")
    loaded = load_embedded(tmp_path / "m")
    assert loaded.config.head_layers == 3
    _assert_same_actions(model, loaded, tokenizer)
    old = json.loads((tmp_path / "m" / "config.json").read_text())
    del old["head_layers"]
    assert EmbeddedVLAConfig.from_json(json.dumps(old)).head_layers == 1
    with pytest.raises(ValueError, match="head_layers must be at least 1"):
        EmbeddedVLA(EmbeddedVLAConfig(**{**CONFIG.__dict__, "head_layers": 0}))


def test_the_state_loss_teaches_a_readout_that_is_not_shipped(tmp_path: Path, tokenizer) -> None:
    """With a scene state per frame (here: which side red is on) the auxiliary readout learns
    it from the visual features; the saved model drops the readout and acts the same."""
    demos = _toy_demos()
    demos.states = np.where(demos.images[:, 0, 0, 0] > 0, 1.0, -1.0)[:, None].astype(np.float32)
    cfg = TrainConfig(steps=80, episodes_per_batch=4, frames_per_episode=8, warmup_steps=5,
                      max_shift_px=1, checkpoint_every=1000, lr=3e-3,
                      state_loss_weight=1.0)  # fmt: skip
    torch.manual_seed(0)
    model = EmbeddedVLA.from_minilm(EmbeddedVLAConfig(**{**CONFIG.__dict__,
                                                         "state_dims": {"toy": 1}}))  # fmt: skip
    log = train(model, tokenizer, {"toy": demos}, cfg, tmp_path / "run", resume=False)
    curve = [loss for _, loss in log["state_loss"]["toy"]]
    assert curve[-1] < 0.3 * curve[0], curve
    save_embedded(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["state_dims"] == {}
    loaded = load_embedded(tmp_path / "m")  # strict: no readout weights in the file
    assert len(loaded.state_heads) == 0
    _assert_same_actions(model, loaded, tokenizer)

    demos.states = None
    with pytest.raises(ValueError, match="no demonstrations carry scene states"):
        train(_fresh(), tokenizer, {"toy": demos}, cfg, tmp_path / "again", resume=False)
