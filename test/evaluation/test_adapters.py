"""The OpenVLA-style adapter through a small in-test model with the same `predict_action`
contract (it is not OpenVLA), and clear errors for adapters that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vla_pruned_ros.models.adapters import OpenVLAStyleAdapter, load_user_adapter


class PredictActionModel(nn.Module):
    """Tiny stand-in with OpenVLA's contract: normalised actions in [-1, 1] from image + prompt,
    un-normalised with per-dataset statistics chosen by `unnorm_key`."""

    STATS = {"bridge": (np.array([-0.1, -0.2, 0.0]), np.array([0.1, 0.2, 0.3])),
             "libero": (np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0]))}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 + 1, 3)
        self.prompts: list[str] = []

    def predict_action(self, pixel_values, prompt_length, unnorm_key, do_sample=False):
        assert do_sample is False
        x = torch.cat([pixel_values.mean(dim=(1, 2)), prompt_length.float()], dim=-1)
        norm = torch.tanh(self.head(x)).detach().numpy()[0]
        low, high = self.STATS[unnorm_key]
        return 0.5 * (norm + 1) * (high - low) + low


def processor(prompt: str, image) -> dict:
    assert prompt.startswith("In: What action should the robot take to ")
    pixels = torch.from_numpy(np.asarray(image, np.float32) / 255.0).unsqueeze(0)
    return {"pixel_values": pixels, "prompt_length": torch.tensor([[len(prompt) / 100.0]])}


def _adapter(key: str) -> OpenVLAStyleAdapter:
    return OpenVLAStyleAdapter(
        PredictActionModel(),
        processor,
        key,
        ["x", "y", "z"],
        [-1, -1, -1],
        [1, 1, 1],
        model_id="tiny-predict-action",
    )


def test_openvla_style_adapter_prepares_inputs_and_unnormalises() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    bridge = _adapter("bridge").predict(frame, "Pick up the red block")
    libero = _adapter("libero").predict(frame, "Pick up the red block")
    assert bridge.dtype == np.float32 and bridge.shape == (3,)
    low, high = PredictActionModel.STATS["bridge"]
    assert np.all(bridge >= low - 1e-6) and np.all(bridge <= high + 1e-6)
    np.testing.assert_allclose(libero, 1.0)  # degenerate stats: low == high == 1
    assert _adapter("bridge").info.action_names == ("x", "y", "z")
    with pytest.raises(TypeError, match="no predict_action"):
        OpenVLAStyleAdapter(nn.Linear(2, 2), processor, "bridge", ["x"], [-1], [1])
    wrong = OpenVLAStyleAdapter(PredictActionModel(), processor, "bridge", ["x", "y"],
                                [-1, -1], [1, 1])  # fmt: skip
    with pytest.raises(ValueError, match="returned 3 values for 2 action names"):
        wrong.predict(frame, "go")


def test_user_adapter_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="is not 'module:Class'"):
        load_user_adapter("no_colon", "x", "nav")
    with pytest.raises(ValueError, match="cannot import adapter"):
        load_user_adapter("no_such_module:Thing", "x", "nav")
    with pytest.raises(ValueError, match="does not implement PolicyAdapter"):
        load_user_adapter("collections:OrderedDict", "x", "nav")
