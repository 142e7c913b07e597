"""The `text` adapter: a VLM that answers in words (NaVILA-style "turn left 30 degrees") runs
`generate`, and its answer is parsed into the action vector by configurable rules.

A rule is a regular expression and the action it means: `action` is the vector when the rule
matches, plus `per_unit` times the number the expression's first group captured. The first rule
that matches (searched, case-insensitive) wins; an answer no rule matches is an error that
quotes the answer and the patterns, so a deployment sees why it got no action (the node logs it
once and counts it as a model error).

A checkpoint whose processor is only a tokenizer (a language model, say a Llama fine-tuned to
answer in action words) is driven by the instruction alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_pruned_ros.models.base import PolicyInfo
from vla_pruned_ros.models.openvla_adapter import model_inputs, model_place

NUMBER = r"(-?\d+(?:\.\d+)?)"
# NaVILA's answers, onto our navigation twist (linear_x m/s, angular_z rad/s) for one step
NAVILA_RULES: tuple[dict[str, Any], ...] = (
    {"pattern": rf"move forward {NUMBER}", "action": [0.0, 0.0], "per_unit": [0.01, 0.0]},
    {"pattern": rf"turn left {NUMBER}", "action": [0.0, 0.0], "per_unit": [0.0, 0.0174533]},
    {"pattern": rf"turn right {NUMBER}", "action": [0.0, 0.0], "per_unit": [0.0, -0.0174533]},
    {"pattern": r"\bstop\b", "action": [0.0, 0.0]},
)
NAVILA_PROMPT = "What should the robot do next to {instruction}? Answer with one action."


@dataclass(frozen=True)
class TextRule:
    pattern: re.Pattern[str]
    action: np.ndarray
    per_unit: np.ndarray | None


class TextActionParser:
    """Answer text -> action vector by the first matching rule."""

    def __init__(self, rules: Sequence[Mapping[str, Any]], dims: int) -> None:
        if not rules:
            raise ValueError("the text adapter needs at least one rule (pattern, action)")
        self.rules = []
        for i, rule in enumerate(rules):
            try:
                pattern = re.compile(str(rule["pattern"]), re.IGNORECASE)
            except (KeyError, re.error) as err:
                raise ValueError(f"text rule {i}: no valid 'pattern' ({err})") from None
            action = np.asarray(rule.get("action", [0.0] * dims), np.float32)
            per = rule.get("per_unit")
            per_unit = None if per is None else np.asarray(per, np.float32)
            for what, vec in (("action", action), ("per_unit", per_unit)):
                if vec is not None and vec.shape != (dims,):
                    raise ValueError(f"text rule {i}: {what} has {vec.size} values for {dims} "
                                     "action names")  # fmt: skip
            if per_unit is not None and pattern.groups < 1:
                raise ValueError(f"text rule {i}: per_unit needs a group capturing the number "
                                 f"in {pattern.pattern!r}")  # fmt: skip
            self.rules.append(TextRule(pattern, action, per_unit))

    def parse(self, text: str) -> np.ndarray:
        for rule in self.rules:
            m = rule.pattern.search(text)
            if m is None:
                continue
            if rule.per_unit is None:
                return rule.action.copy()
            try:
                value = float(m.group(1))
            except (TypeError, ValueError):
                raise ValueError(f"the answer {text!r} matched {rule.pattern.pattern!r} but its "
                                 f"group {m.group(1)!r} is not a number") from None  # fmt: skip
            return (rule.action + value * rule.per_unit).astype(np.float32)
        patterns = [r.pattern.pattern for r in self.rules]
        raise ValueError(f"the model answered {text!r}, which matches none of the text rules "
                         f"{patterns}; adjust the adapter option 'rules'")  # fmt: skip


class TextActionPolicy:
    """PolicyAdapter: processor(prompt, image) -> generate -> decoded answer -> parsed action."""

    def __init__(self, model: Any, processor: Any, parser: TextActionParser, info: PolicyInfo,
                 prompt: str = NAVILA_PROMPT, max_new_tokens: int = 16) -> None:  # fmt: skip
        self.model, self.processor, self.parser, self.info = model, processor, parser, info
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.last_text = ""
        self._place = model_place(model)

    @property
    def text_only(self) -> bool:
        """A checkpoint with a tokenizer and no image processor (a language model) answers
        from the instruction alone; the frame only paces it."""
        return getattr(self.processor, "image_processor", None) is None

    def answer(self, image: np.ndarray, instruction: str) -> str:
        from PIL import Image

        text = self.prompt.format(instruction=instruction.strip())
        if self.text_only:
            inputs = self.processor(text, return_tensors="pt")
        else:
            inputs = self.processor(text=text, images=Image.fromarray(image), return_tensors="pt")
        inputs = model_inputs(inputs, self._place)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=False)  # fmt: skip
        new = out[0, inputs["input_ids"].shape[1] :]
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return tokenizer.decode(new, skip_special_tokens=True)

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        self.last_text = self.answer(image, instruction)
        return self.parser.parse(self.last_text)


def load_text_policy(artifact: str, task: str = "nav", *, mode: str | None = None,
                     device: str = "cpu", trust_remote_code: bool = False,
                     rules: Sequence[Mapping[str, Any]] = NAVILA_RULES,
                     action_names: Sequence[str] = ("linear_x", "angular_z"),
                     action_low: Sequence[float] = (-0.5, -1.0),
                     action_high: Sequence[float] = (0.5, 1.0), prompt: str = NAVILA_PROMPT,
                     max_new_tokens: int = 16, action_space: str = "base_velocity",
                     dtype: str = "float32") -> TextActionPolicy:  # fmt: skip
    """`adapter: text` for a checkpoint folder (or an artifact of one) with a processor;
    `dtype` what the model computes in (`openvla_adapter.COMPUTE_DTYPES`)."""
    from vla_pruned_ros.models.openvla_adapter import load_model, load_processor, model_variant

    folder = Path(artifact).expanduser()
    processor = load_processor(folder, trust_remote_code)
    model = load_model(folder, trust_remote_code, mode, device, dtype)
    names = tuple(action_names)
    memory = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    info = PolicyInfo(folder.name, model_variant(folder, model), -1, action_space, names,
                      tuple(action_low), tuple(action_high), memory)  # fmt: skip
    return TextActionPolicy(model, processor, TextActionParser(rules, len(names)), info, prompt,
                            int(max_new_tokens))  # fmt: skip
