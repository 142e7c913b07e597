"""The `lerobot` adapter: a LeRobot policy folder (SmolVLA, pi0, pi0.5, ...) run through its own
pre/post-processor pipelines and `select_action`, when `lerobot` is importable.

Written against LeRobot 0.4.4's source (read from its wheel; it pins torch<2.11 and
transformers<5, so it is not installed beside this package's pins): a policy folder holds
`config.json` (`type`, `input_features`, `output_features`), `model.safetensors`,
`policy_preprocessor.json` and `policy_postprocessor.json` (with their normalizer statistics in
`policy_*_step_*.safetensors`). The observation is a dict of `observation.images.<camera>`
(float 1x3xHxW in [0, 1]), `observation.state` (float 1xD) and `task` (the instruction), as
`lerobot.envs.utils.preprocess_observation` builds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_pruned_ros.models.base import PolicyInfo

LEROBOT_VERSION = "0.4.4"  # the version whose source this adapter follows
OBS_IMAGES, OBS_STATE, ACTION, TASK = "observation.images", "observation.state", "action", "task"
PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor.json", "policy_postprocessor.json"
INSTALL_HINT = (
    f"the lerobot adapter needs LeRobot (written against {LEROBOT_VERSION}) in the node's "
    f"environment: pip install 'lerobot[smolvla]=={LEROBOT_VERSION}' (or [pi]); it pins "
    "torch<2.11 and transformers<5, so use an environment built for it"
)


def read_policy_config(folder: Path) -> dict[str, Any]:
    """A LeRobot policy folder's config.json, checked for what the adapter needs."""
    folder = Path(folder)
    missing = [
        f for f in ("config.json", PREPROCESSOR, POSTPROCESSOR) if not (folder / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{folder} is not a LeRobot policy folder: {missing} missing "
                                "(policy.save_pretrained and its processors' output)")  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    if "type" not in config or "input_features" not in config:
        raise ValueError(f"{folder}/config.json has no LeRobot 'type'/'input_features'")
    return config


def image_keys(config: dict[str, Any]) -> list[str]:
    return [k for k, f in config["input_features"].items() if f.get("type") == "VISUAL"]


def lerobot_observation(
    config: dict[str, Any],
    image: np.ndarray,
    instruction: str,
    camera_key: str = "",
    state: np.ndarray | None = None,
) -> dict[str, Any]:
    """The observation dict LeRobot's preprocessor takes. The camera frame feeds `camera_key`
    (default: every image feature, for a policy trained with several views); the state is
    zeros of its shape unless given (a camera-only robot has none)."""
    keys = image_keys(config)
    if camera_key and camera_key not in keys:
        raise ValueError(f"camera_key {camera_key!r} is not one of the policy's images {keys}")
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    obs: dict[str, Any] = {k: pixels for k in ([camera_key] if camera_key else keys)}
    feature = config["input_features"].get(OBS_STATE)
    if feature is not None:
        dims = int(np.prod(feature["shape"]))
        vec = np.zeros(dims, np.float32) if state is None else np.asarray(state, np.float32)
        if vec.shape != (dims,):
            raise ValueError(f"state has {vec.size} values; the policy's {OBS_STATE} has {dims}")
        obs[OBS_STATE] = torch.from_numpy(vec)[None]
    obs[TASK] = [instruction]
    return obs


class LeRobotPolicy:
    """PolicyAdapter over a LeRobot policy and its processor pipelines."""

    def __init__(self, folder: Path, device: str = "cpu", camera_key: str = "",
                 action_names: list[str] | None = None, action_low: list[float] | None = None,
                 action_high: list[float] | None = None, state: list[float] | None = None,
                 **_: Any) -> None:  # fmt: skip
        self.config = read_policy_config(folder)
        try:
            from lerobot.configs.policies import PreTrainedConfig
            from lerobot.policies.factory import get_policy_class, make_pre_post_processors
        except ImportError as err:
            raise ValueError(f"{INSTALL_HINT} ({err})") from None
        cfg = PreTrainedConfig.from_pretrained(str(folder))
        cfg.device = device
        self.policy = get_policy_class(cfg.type).from_pretrained(str(folder), config=cfg).eval()
        self.pre, self.post = make_pre_post_processors(cfg, pretrained_path=str(folder))
        dims = int(np.prod(self.config["output_features"][ACTION]["shape"]))
        memory = sum(p.numel() * p.element_size() for p in self.policy.parameters())
        names = tuple(action_names or [f"a{i}" for i in range(dims)])
        self.info = PolicyInfo(f"{self.config['type']}:{Path(folder).name}", "dense", -1,
                               "lerobot", names, tuple(action_low or [-1.0] * dims),
                               tuple(action_high or [1.0] * dims),
                               memory)  # fmt: skip
        self.camera_key, self.state = camera_key, state
        self._instruction: str | None = None

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        if instruction != self._instruction:  # a new task: drop the queued action chunk
            self.policy.reset()
            self._instruction = instruction
        state = None if self.state is None else np.asarray(self.state)
        obs = self.pre(lerobot_observation(self.config, image, instruction, self.camera_key, state))
        with torch.inference_mode():
            action = self.post(self.policy.select_action(obs))
        return np.asarray(action.detach().cpu(), np.float32).reshape(-1)


def load_lerobot_policy(artifact: str, task: str = "", device: str = "cpu",
                        **options: Any) -> LeRobotPolicy:  # fmt: skip
    """`adapter: lerobot` for a LeRobot policy folder."""
    return LeRobotPolicy(Path(artifact).expanduser(), device=device, **options)
