"""What every simulated task offers: seeded episodes, camera observations, an expert, and
safety bookkeeping through the same SafetyMonitor the ROS safety node uses."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from vla_pruned_ros.monitor import SafetyLimits, SafetyMonitor
from vla_pruned_ros.sim.instructions import HELD_OUT_SEED_START

CONTROL_DT = 0.1  # s per action (10 Hz)
PHYSICS_DT = 0.005


@dataclass(frozen=True)
class Observation:
    image: np.ndarray  # HxWx3 uint8, RGB
    instruction: str
    proprio: np.ndarray  # small state vector (not used by the VLA; for experts and logging)


@dataclass(frozen=True)
class StepResult:
    observation: Observation
    done: bool
    success: bool
    events: list[dict[str, Any]] = field(default_factory=list)  # safety events this step


class Task(abc.ABC):
    """A seeded MuJoCo task. One instance owns one model, data and renderer."""

    name: str
    action_names: tuple[str, ...]
    action_high: np.ndarray
    max_steps: int

    def __init__(self, image_size: int = 64) -> None:
        self.image_size = image_size
        self.model = mujoco.MjModel.from_xml_string(self.mjcf())
        self.model.opt.timestep = PHYSICS_DT
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, image_size, image_size)
        self.substeps = round(CONTROL_DT / PHYSICS_DT)
        self.monitor = SafetyMonitor(self.safety_limits())
        self.steps = 0
        self.instruction = ""
        self.seed = 0
        self.split = "train"

    # -- what a task defines ----------------------------------------------------------------
    @abc.abstractmethod
    def mjcf(self) -> str: ...

    @abc.abstractmethod
    def safety_limits(self) -> SafetyLimits: ...

    @abc.abstractmethod
    def _layout(self, rng: np.random.Generator) -> str:
        """Place the scene for this seed; return the goal colour / object name."""

    @abc.abstractmethod
    def _apply_action(self, action: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _check(self) -> bool:
        """Feed this step's safety inputs to the monitor; return success."""

    @abc.abstractmethod
    def expert_action(self) -> np.ndarray: ...

    @abc.abstractmethod
    def _proprio(self) -> np.ndarray: ...

    @abc.abstractmethod
    def metrics(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _instruction_for(self, target: str, rng: np.random.Generator, phrasing: str) -> str: ...

    camera: str = "ego"

    # -- the episode loop -------------------------------------------------------------------
    def reset(
        self, seed: int, instruction: str | None = None, phrasing: str = "train"
    ) -> Observation:
        """A new episode: the scene follows `seed` alone (seeds >= HELD_OUT_SEED_START are the
        held-out scenes); the instruction is drawn from the `phrasing` templates unless given."""
        rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        self.target = self._layout(rng)
        mujoco.mj_forward(self.model, self.data)
        self.seed, self.steps = seed, 0
        self.split = "heldout_scene" if seed >= HELD_OUT_SEED_START else "train"
        if phrasing != "train":
            self.split = f"{self.split}+heldout_phrasing"
        self.instruction = instruction or self._instruction_for(self.target, rng, phrasing)
        self.monitor.start_episode(f"{self.name}-{seed}", self.sim_time)
        self.done = self.success = False
        self._start_episode()
        return self.observe()

    def _start_episode(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook for per-episode bookkeeping (path length, ...)."""

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(np.asarray(action, np.float64), -self.action_high, self.action_high)
        self._apply_action(action)
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
        self.steps += 1
        success = self._check()
        self.success = self.success or success
        self.done = success or self.steps >= self.max_steps
        events = [vars(e) for e in self.monitor.pop_events()]
        return StepResult(self.observe(), self.done, success, events)

    @property
    def sim_time(self) -> float:
        return float(self.data.time)

    def observe(self) -> Observation:
        return Observation(self.render(), self.instruction, self._proprio())

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=self.camera)
        return self.renderer.render().copy()

    def contacts(self) -> list[tuple[str, str, float]]:
        """All current contacts as (body, other body, normal force)."""
        out, force = [], np.zeros(6)
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            mujoco.mj_contactForce(self.model, self.data, i, force)
            b1 = self.model.body(self.model.geom_bodyid[c.geom1]).name
            b2 = self.model.body(self.model.geom_bodyid[c.geom2]).name
            out.append((b1, b2, float(abs(force[0]))))
        return out

    def safety_summary(self) -> dict[str, Any]:
        ep = self.monitor.episode
        counts = {k: v for k, v in ep.counts.items() if v}
        return {"unsafe": ep.unsafe, "violations": counts, "collisions": ep.counts["collision"]}

    def close(self) -> None:
        self.renderer.close()
