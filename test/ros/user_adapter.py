"""A user's own policy adapter, as a robotics team would write one for their model; the policy
node loads it by name (`adapter:=user_adapter:ConstantPolicy`)."""

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
