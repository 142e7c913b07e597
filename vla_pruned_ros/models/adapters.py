"""Policy adapters beyond the embedded VLA: the OpenVLA-style `predict_action` contract around a
model already in memory, a user's own class named as `module:Class`, and the adapter options a
deployment passes (the node's `adapter_options`, `unnorm_key`, `trust_remote_code`), all behind
the one PolicyAdapter interface (prepare inputs from image + instruction, return a named action
vector). The presets a user names in one word are in `registry.py`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vla_pruned_ros.models.base import PolicyAdapter, PolicyInfo

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


class OpenVLAStyleAdapter:
    """A model exposing `predict_action(**inputs, unnorm_key=..., do_sample=False)` (OpenVLA's
    contract), with a processor that turns (prompt, PIL image) into model inputs. The action
    statistics under `unnorm_key` un-normalise the output, as in OpenVLA."""

    def __init__(
        self,
        model: Any,
        processor: Callable[..., Any],
        unnorm_key: str,
        action_names: Sequence[str],
        action_low: Sequence[float],
        action_high: Sequence[float],
        model_id: str = "openvla-style",
        action_space: str = "ee_delta",
        prompt: str = OPENVLA_PROMPT,
    ) -> None:
        if not hasattr(model, "predict_action"):
            raise TypeError(f"{type(model).__name__} has no predict_action(); not OpenVLA-style")
        self.model, self.processor, self.unnorm_key, self.prompt = (
            model,
            processor,
            unnorm_key,
            prompt,
        )
        memory = (
            sum(p.numel() * p.element_size() for p in model.parameters())
            if hasattr(model, "parameters")
            else 0
        )
        self.info = PolicyInfo(model_id, "dense", -1, action_space, tuple(action_names),
                               tuple(action_low), tuple(action_high), memory)  # fmt: skip

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        from PIL import Image

        inputs = self.processor(self.prompt.format(instruction=instruction.strip().lower()),
                                Image.fromarray(image))  # fmt: skip
        action = self.model.predict_action(**inputs, unnorm_key=self.unnorm_key, do_sample=False)
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape[0] != len(self.info.action_names):
            raise ValueError(f"predict_action returned {action.shape[0]} values for "
                             f"{len(self.info.action_names)} action names")  # fmt: skip
        return action


def load_user_adapter(spec: str, artifact: str, task: str, **options: Any) -> PolicyAdapter:
    """`package.module:Class`, constructed as Class(artifact=..., task=..., **options); it must
    provide `info` (PolicyInfo) and `predict(image, instruction)`."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"adapter {spec!r} is not 'module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import adapter {spec!r}: {err}") from None
    adapter = cls(artifact=artifact, task=task, **options)
    if not isinstance(getattr(adapter, "info", None), PolicyInfo) or not callable(
        getattr(adapter, "predict", None)
    ):
        raise ValueError(f"{spec} does not implement PolicyAdapter (info: PolicyInfo, predict())")
    return adapter


def adapter_options(
    options: str | Mapping[str, Any] | None = None,
    unnorm_key: str = "",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """The keyword options `load_policy` passes to an adapter: a YAML/JSON mapping (a ROS string
    parameter, a CLI argument or a mapping read from a file) plus the two options every
    deployment may set on its own. `trust_remote_code` is only ever what the caller says."""
    if isinstance(options, str):
        import yaml

        try:
            parsed = yaml.safe_load(options) if options.strip() else {}
        except yaml.YAMLError as err:
            raise ValueError(f"adapter_options is not YAML/JSON: {err}") from None
    else:
        parsed = dict(options or {})
    if not isinstance(parsed, dict):
        raise ValueError(f"adapter_options must be a mapping, not {type(parsed).__name__}")
    if "trust_remote_code" in parsed:
        raise ValueError("trust_remote_code is its own parameter, not an adapter option")
    out = {str(k): v for k, v in parsed.items()}
    if unnorm_key:
        out["unnorm_key"] = unnorm_key
    out["trust_remote_code"] = bool(trust_remote_code)
    return out
