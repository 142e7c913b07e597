"""A user's own policy adapter, as a robotics team would write one for their model; the policy
node loads it by name (`adapter:=user_adapter:ConstantPolicy`)."""

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla_pruned_ros.models.base import PolicyInfo


class ConstantPolicy:
    def __init__(self, artifact: str, task: str, **_options) -> None:
        self.info = PolicyInfo(
            "constant",
            "dense",
            -1,
            "base_velocity",
            ("linear_x", "angular_z"),
            (-0.5, -1.0),
            (0.5, 1.0),
            0,
        )
        self.value = np.array([0.25, -0.5], np.float32)

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        return self.value


class ScaledPolicy(ConstantPolicy):
    """A class with options of its own, both required (no defaults, no **options): `scale`
    multiplies the constant action and `offset` is added to it, so the action it publishes says
    which options reached it, and a deployment that dropped them fails to build it at all.
    The rest are what every deployment passes a `module:Class` (registry.load_policy)."""

    def __init__(self, artifact: str, task: str, *, scale: float, offset: Sequence[float],
                 mode: str | None = None, device: str = "cpu",
                 trust_remote_code: bool = False) -> None:  # fmt: skip
        super().__init__(artifact, task)
        self.info = replace(self.info, model_id=f"scaled x{scale:g}")
        self.value = (self.value * np.float32(scale) + np.asarray(offset, np.float32)).astype(
            np.float32
        )


class FlakyPolicy(ConstantPolicy):
    """A model whose step raises on demand: while the file `<artifact>/fail` exists, `predict`
    raises a RuntimeError carrying the file's text (a real file the test writes and removes)."""

    def __init__(self, artifact: str, task: str, **options) -> None:
        super().__init__(artifact, task, **options)
        self.switch = Path(artifact) / "fail"

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        try:
            reason = self.switch.read_text()
        except FileNotFoundError:
            return self.value
        raise RuntimeError(reason)
