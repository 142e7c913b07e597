"""The embedded VLA behind the PolicyAdapter interface: one embodiment head, text features cached
per instruction, camera frames through the one preprocessing path."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vla_pruned_ros.frames import fit_frame
from vla_pruned_ros.models.embedded_io import load_tokenizer
from vla_pruned_ros.models.embedded_net import EmbeddedVLA


class EmbeddedPolicy:
    """The embedded VLA behind the PolicyAdapter interface, for one embodiment head."""

    def __init__(self, model: EmbeddedVLA, task: str, info_overrides: dict | None = None) -> None:
        from vla_pruned_ros.models.base import PolicyInfo

        if task not in model.config.action_dims:
            known = sorted(model.config.action_dims)
            raise ValueError(f"the embedded VLA has no action head {task!r}; known: {known}")
        self.model, self.task = model.eval(), task
        self.tokenizer = load_tokenizer()
        self._text_cache: dict[str, torch.Tensor] = {}
        scale = model.config.action_scale[task]
        fields = {
            "model_id": "embedded",
            "variant": "dense",
            "rank": -1,
            "action_space": "base_velocity" if task == "nav" else "ee_velocity",
            "action_names": tuple(model.config.action_names[task]),
            "action_low": tuple(-s for s in scale),
            "action_high": tuple(scale),
            "memory_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
        }
        self.info = PolicyInfo(**{**fields, **(info_overrides or {})})

    def set_action_gain(self, gain: float) -> None:
        """Override the stored gain of this policy's head (calibration and A/B runs)."""
        if not gain > 0:
            raise ValueError(f"action gain must be positive, not {gain}")
        gains = {**self.model.config.action_gain, self.task: float(gain)}
        self.model.config = dataclasses.replace(self.model.config, action_gain=gains)

    @torch.inference_mode()
    def text_features(self, instruction: str) -> torch.Tensor:
        """MiniLM features of an instruction, computed once per distinct instruction."""
        if instruction not in self._text_cache:
            if len(self._text_cache) > 256:
                self._text_cache.clear()
            enc = self.tokenizer(
                [instruction],
                truncation=True,
                max_length=self.model.config.max_text_tokens,
                return_tensors="pt",
            )
            device = next(self.model.parameters()).device
            self._text_cache[instruction] = self.model.encode_text(
                enc["input_ids"].to(device), enc["attention_mask"].to(device)
            )
        return self._text_cache[instruction]

    @torch.inference_mode()
    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        """The physical action for one RGB uint8 HxWx3 camera frame: the frame goes through
        `frames.fit_frame` (the one resize to the model's resolution, shared with the
        simulator's camera, bag replay and calibration), then the network's own
        `preprocess_images`."""
        image = fit_frame(image, self.model.config.image_size)
        text = self.text_features(instruction)
        frame = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).to(text.device)
        out = self.model.act_from_features(frame, text, self.task).float().cpu()
        return self.model.unnormalise(out, self.task)[0].numpy()
