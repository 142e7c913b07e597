"""The embedded VLA behind the PolicyAdapter interface: one embodiment head, text features cached
per instruction (in memory; on disk too with an `InstructionCache`), camera frames through the
one preprocessing path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vla_pruned_ros.frames import fit_frame
from vla_pruned_ros.models.embedded_net import EmbeddedVLA

if TYPE_CHECKING:
    from vla_pruned_ros.models.instruction_cache import InstructionCache


class EmbeddedPolicy:
    """The embedded VLA behind the PolicyAdapter interface, for one embodiment head.

    `model` may lack its text encoder (`EmbeddedVLA.without_text`, for offline replay): then
    `encoder` loads the full model the first time an instruction is not in `cache`, and
    `info_overrides` must give `memory_bytes` (the full model's). `identity` names the
    encoder's weights in `cache` (see `models.instruction_cache`)."""

    def __init__(
        self,
        model: EmbeddedVLA,
        task: str,
        info_overrides: dict | None = None,
        *,
        encoder: Callable[[], EmbeddedVLA] | None = None,
        cache: InstructionCache | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        from vla_pruned_ros.models.base import PolicyInfo

        if task not in model.config.action_dims:
            known = sorted(model.config.action_dims)
            raise ValueError(f"the embedded VLA has no action head {task!r}; known: {known}")
        if model.text is None and (encoder is None or "memory_bytes" not in (info_overrides or {})):
            raise ValueError("a model without its text encoder needs `encoder` (to load it on "
                             "a cache miss) and the full model's memory_bytes")  # fmt: skip
        if cache is not None and identity is None:
            raise ValueError("an instruction cache needs the encoder's `identity`")
        self.model, self.task = model.eval(), task
        self._encoder, self._load_encoder = (model if model.text is not None else None), encoder
        self._tokenizer = None
        self.cache, self.identity = cache, identity
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

    @property
    def tokenizer(self):
        """MiniLM's tokenizer, loaded on first use (only an instruction not cached needs it)."""
        if self._tokenizer is None:
            from vla_pruned_ros.models.embedded_io import load_tokenizer

            self._tokenizer = load_tokenizer()
        return self._tokenizer

    def encoder(self) -> EmbeddedVLA:
        """The model with its text encoder: `model` itself, or the full model loaded once."""
        if self._encoder is None:
            assert self._load_encoder is not None
            self._encoder = self._load_encoder().eval()
        return self._encoder

    @torch.inference_mode()
    def text_features(self, instruction: str) -> torch.Tensor:
        """MiniLM features of an instruction, computed once per distinct instruction (and,
        with a cache, once per encoder and text across runs)."""
        if instruction not in self._text_cache:
            if len(self._text_cache) > 256:
                self._text_cache.clear()
            param = next(self.model.parameters())
            key = None
            if self.cache is not None:
                assert self.identity is not None
                key = self.cache.key(self.identity, instruction, param.dtype, param.device)
                stored = self.cache.get(key)
                if stored is not None:
                    self._text_cache[instruction] = stored.to(param.device)
                    return self._text_cache[instruction]
            self._text_cache[instruction] = self._encode(instruction)
            if key is not None:
                self.cache.put(key, self._text_cache[instruction])
        return self._text_cache[instruction]

    def _encode(self, instruction: str) -> torch.Tensor:
        encoder = self.encoder()
        enc = self.tokenizer([instruction], encoder.config.max_text_tokens)
        device = next(encoder.parameters()).device
        return encoder.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device))

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
