"""The `openvla` adapter: a checkpoint folder (or an artifact of one) exposing OpenVLA's
`predict_action(input_ids, unnorm_key=..., **inputs)`, with its own processor, OpenVLA's prompt
template and the action statistics (`norm_stats`) its config carries.

Remote code (OpenVLA ships `modeling_prismatic.py`) runs only when the deployment opts in with
`trust_remote_code`; a manifest never switches it on. OpenVLA's processor is an image processor
and a tokenizer side by side (`processing_prismatic.py`), so the tokenised prompt is computed
once per instruction and only the image is processed per frame, by `pixel_inputs.fast_pixels`
(the processor's own steps, checked equal at load) where the image processor allows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_pruned_ros.models.base import PolicyInfo

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
OPENVLA_ACTIONS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "tokenizer.model")  # fmt: skip


def resolve_unnorm_key(norm_stats: dict[str, Any], unnorm_key: str = "") -> str:
    """The dataset whose statistics un-normalise actions: the one given, or the only one."""
    keys = sorted(norm_stats)
    if not keys:
        raise ValueError("the checkpoint's config has no norm_stats: it cannot un-normalise "
                         "actions (is it an OpenVLA checkpoint?)")  # fmt: skip
    if not unnorm_key:
        if len(keys) == 1:
            return keys[0]
        raise ValueError(f"the checkpoint has action statistics for {len(keys)} datasets; set "
                         f"unnorm_key to one of {keys}")  # fmt: skip
    if unnorm_key not in norm_stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} is not in the checkpoint's norm_stats; "
                         f"choose one of {keys}")  # fmt: skip
    return unnorm_key


def _config(folder: Path) -> dict[str, Any]:
    """The model config: the folder's config.json, or the one an artifact's manifest records."""
    if (folder / "manifest.json").is_file():
        from vla_pruned_ros.compression.artifact import read_manifest

        return dict(read_manifest(folder, verify=False).get("extra", {}).get("model_config") or {})
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    raise FileNotFoundError(f"{folder} holds neither a manifest.json (an artifact) nor a "
                            "config.json (a checkpoint folder)")  # fmt: skip


def _check_remote_code(folder: Path, config: dict[str, Any], trust_remote_code: bool) -> None:
    if config.get("auto_map") and not trust_remote_code:
        raise ValueError(
            f"{folder} runs the model's own code ({sorted(config['auto_map'].values())[0]}); "
            "it loads only when the deployment opts in: set trust_remote_code:=true "
            "(--trust-remote-code) if you trust its source"
        )


# The adapter option `dtype`: the dtype the model computes in. float32 by default (what the
# artifact's tests compare against); bfloat16 halves a dense model's memory and, on a CPU with
# AMX-BF16, lets the sparse kernel multiply many tokens (a prompt's prefill) in tiles.
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_dtype(name: str) -> torch.dtype:
    """The torch dtype of the adapter option `dtype`, or a ValueError naming the choices."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def model_place(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and compute dtype of a loaded model (its first float parameter), found once
    at load: `model_inputs` needs them per frame."""
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if first is None:
        return torch.device("cpu"), torch.float32
    return first.device, first.dtype


def model_inputs(inputs: dict[str, Any], place: tuple[torch.device, torch.dtype]) -> dict[str, Any]:
    """A processor's tensors on the model's device, floating ones in its dtype (`place`, from
    `model_place`; pixels come as float32 whatever the model computes in)."""
    dev, dtype = place
    return {k: (v.to(dev, dtype) if v.is_floating_point() else v.to(dev))
            if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}  # fmt: skip


def load_model(folder: Path, trust_remote_code: bool, mode: str | None = None,
               device: str = "cpu", dtype: str = "float32") -> torch.nn.Module:  # fmt: skip
    """The model of a checkpoint folder (dense) or of an artifact made from one, computing in
    `dtype` (a name of COMPUTE_DTYPES)."""
    torch_dtype = compute_dtype(dtype)
    if (folder / "manifest.json").is_file():
        from vla_pruned_ros.models.hf_checkpoint import load_checkpoint_artifact

        model = load_checkpoint_artifact(folder, mode=mode, dtype=torch_dtype,
                                         trust_remote_code=trust_remote_code)  # fmt: skip
    else:
        from safetensors.torch import load_file

        from vla_pruned_ros.models.hf_checkpoint import checkpoint_files, skeleton

        try:
            model = skeleton(folder, trust_remote_code)
        except ValueError:  # no AutoModel entry (OpenVLA's auto_map names only Vision2Seq)
            model = _auto_map_model(folder, trust_remote_code)
        state: dict[str, torch.Tensor] = {}
        for f in checkpoint_files(folder):
            state.update(load_file(str(f)))
        model.load_state_dict(state)
        model = model.to(torch_dtype)
    return model.to(device).eval()


def _auto_map_model(folder: Path, trust_remote_code: bool) -> torch.nn.Module:
    """The model class an `auto_map` entry names, for a checkpoint with no AutoModel entry."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                        local_files_only=True)  # fmt: skip
    entries = {k: v for k, v in (getattr(config, "auto_map", None) or {}).items()
               if k.startswith("AutoModel")}  # fmt: skip
    if not entries or not trust_remote_code:
        raise ValueError(f"{folder}: no model class found for its config")
    return get_class_from_dynamic_module(next(iter(entries.values())), folder)(config)


def model_variant(folder: Path, model: torch.nn.Module) -> str:
    """'dense' for a checkpoint folder; for an artifact 'gluestick' when any layer carries a
    correction (rank > 0), else 'pruned' (VLAAction.variant, diagnostics)."""
    if not (folder / "manifest.json").is_file():
        return "dense"
    return "gluestick" if any(getattr(m, "rank", 0) for m in model.modules()) else "pruned"


def load_processor(folder: Path, trust_remote_code: bool) -> Any:
    """The checkpoint's processor from its own files (never a hub)."""
    if not any((folder / f).is_file() for f in PROCESSOR_FILES):
        raise FileNotFoundError(
            f"{folder} holds no processor or tokenizer files ({', '.join(PROCESSOR_FILES[:3])}"
            "...): "
            "compress the checkpoint folder that has them, or point artifact at that folder"
        )
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                             local_files_only=True)  # fmt: skip
    except ImportError as err:
        raise ValueError(f"the processor of {folder} needs a package that is not installed: "
                         f"{err}") from None  # fmt: skip


class OpenVLAPolicy:
    """PolicyAdapter over a loaded OpenVLA-contract model and its processor."""

    def __init__(self, model: Any, processor: Any, norm_stats: dict[str, Any], unnorm_key: str = "",
                 model_id: str = "openvla", variant: str = "dense",
                 action_names: tuple[str, ...] | None = None, prompt: str = OPENVLA_PROMPT,
                 cache_prompt: bool = True, resize: str = "processor") -> None:  # fmt: skip
        if not callable(getattr(model, "predict_action", None)):
            raise TypeError(f"{type(model).__name__} has no predict_action(): not an OpenVLA "
                            "checkpoint; use adapter 'text' or 'module:Class'")  # fmt: skip
        self.model, self.processor, self.prompt = model, processor, prompt
        self.unnorm_key = resolve_unnorm_key(norm_stats, unnorm_key)
        stats = norm_stats[self.unnorm_key]["action"]
        low, high = np.asarray(stats["q01"], np.float32), np.asarray(stats["q99"], np.float32)
        mask = np.asarray(stats.get("mask", [True] * len(low)), bool)
        low, high = np.where(mask, low, -1.0), np.where(mask, high, 1.0)  # unmasked: normalised
        names = tuple(action_names or (OPENVLA_ACTIONS if len(low) == 7 else
                                       [f"a{i}" for i in range(len(low))]))  # fmt: skip
        if len(names) != len(low):
            raise ValueError(f"{len(names)} action names for {len(low)} actions in "
                             f"norm_stats[{self.unnorm_key!r}]")  # fmt: skip
        memory = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        self.info = PolicyInfo(model_id, variant, -1, "ee_delta", names, tuple(low.tolist()),
                               tuple(high.tolist()), memory)  # fmt: skip
        split = hasattr(processor, "tokenizer") and hasattr(processor, "image_processor")
        self._split = cache_prompt and split
        self._pixels, self.pixel_path = None, "the processor (prompt not cached)"
        if self._split:
            from vla_pruned_ros.models.pixel_inputs import fast_pixels

            self._pixels, why = fast_pixels(processor.image_processor, resize)
            self.pixel_path = why if self._pixels is not None else f"the image processor: {why}"
        if resize != "processor" and self._pixels is None:
            raise ValueError(f"resize {resize!r} cannot apply: {self.pixel_path}")
        self._text: dict[str, dict[str, torch.Tensor]] = {}
        self._place = model_place(model)

    def inputs(self, image: np.ndarray, instruction: str) -> dict[str, torch.Tensor]:
        """What the processor makes of (prompt, image); the text part cached per instruction."""
        from PIL import Image

        prompt = self.prompt.format(instruction=instruction.strip().lower())
        if not self._split:
            out = dict(self.processor(prompt, Image.fromarray(image)))
        else:
            text = self._text.get(prompt)
            if text is None:
                text = dict(self.processor.tokenizer(prompt, return_tensors="pt"))
                self._text = {prompt: text}  # one instruction at a time: keep only the latest
            rgb = np.ascontiguousarray(image)
            if self._pixels is not None:  # the processor's steps without its per-call cost
                pixels = self._pixels(rgb)
            else:  # the array itself: the processor would convert a PIL image back to one
                pixels = self.processor.image_processor(rgb, return_tensors="pt")["pixel_values"]
            out = {**text, "pixel_values": pixels}
        return model_inputs(out, self._place)

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        inputs = self.inputs(image, instruction)
        with torch.inference_mode():
            action = self.model.predict_action(**inputs, unnorm_key=self.unnorm_key,
                                               do_sample=False)  # fmt: skip
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape[0] != len(self.info.action_names):
            raise ValueError(f"predict_action returned {action.shape[0]} values for "
                             f"{len(self.info.action_names)} action names")  # fmt: skip
        return action


def load_openvla_policy(artifact: str, task: str = "", *, unnorm_key: str = "",
                        trust_remote_code: bool = False, mode: str | None = None,
                        device: str = "cpu", action_names: list[str] | None = None,
                        prompt: str = OPENVLA_PROMPT, cache_prompt: bool = True,
                        resize: str = "processor",
                        dtype: str = "float32") -> OpenVLAPolicy:  # fmt: skip
    """`adapter: openvla` for a checkpoint folder or an artifact of one. `resize`: "processor"
    (the checkpoint's own resize, exactly) or "area" (`frames.fit_frame`: cheaper on large
    frames, not the resize it was trained with); see models/pixel_inputs.py. `dtype`: what the
    model computes in (COMPUTE_DTYPES)."""
    folder = Path(artifact).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"artifact {folder} is not a folder")
    config = _config(folder)
    _check_remote_code(folder, config, trust_remote_code)
    processor = load_processor(folder, trust_remote_code)
    model = load_model(folder, trust_remote_code, mode, device, dtype)
    stats = getattr(model, "norm_stats", None) or config.get("norm_stats") or {}
    variant = model_variant(folder, model)
    names = tuple(action_names) if action_names else None
    return OpenVLAPolicy(model, processor, stats, unnorm_key, model_id=folder.name,
                         variant=variant, action_names=names, prompt=prompt,
                         cache_prompt=cache_prompt, resize=resize)  # fmt: skip
