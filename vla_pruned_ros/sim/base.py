"""What every simulated task offers: seeded episodes, camera observations, an expert, and safety
bookkeeping through the same SafetyMonitor the ROS safety node uses.

A task instance owns one model, one data and one renderer, and is reused across episodes
(`reset` re-places the scene from the seed), so worker processes pay the model and GL setup once.
"""

from __future__ import annotations

import abc
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import mujoco
import numpy as np

from vla_pruned_ros.frames import fit_frame
from vla_pruned_ros.monitor import SafetyLimits
from vla_pruned_ros.sim import instructions as lang
from vla_pruned_ros.sim.safety import EpisodeSafety, robot_contacts, sim_limits

CONTROL_DT = 0.1  # s per action (10 Hz)
PHYSICS_DT = 0.005  # s per physics step: 20 substeps per action
# The camera's supersampling (see Task.__init__); the embedded model is trained on this camera.
SUPERSAMPLE = 1


@dataclass(frozen=True)
class Observation:
    image: np.ndarray  # HxWx3 uint8, RGB
    instruction: str
    proprio: np.ndarray  # small state vector (for experts, logging and ROS state topics)
    sim_time: float = 0.0


@dataclass(frozen=True)
class StepResult:
    observation: Observation
    done: bool
    success: bool
    events: list[dict[str, Any]] = field(default_factory=list)  # violations new at this step

    @property
    def info(self) -> dict[str, Any]:
        return {"success": self.success, "events": self.events}


@dataclass(frozen=True)
class ContactRecord:
    """One body pair's contact, with where it is and which way it faces (world frame): what the
    safety gate's zones need to block only motion into it (the in-process gate reads it)."""

    body: str
    other: str
    force: float  # normal force, N
    position: tuple[float, float, float]
    normal: tuple[float, float, float]  # unit, from `body` into `other`

    @property
    def pair(self) -> tuple[str, str, float]:
        """(body, other, force): the form the detectors take."""
        return (self.body, self.other, self.force)


@dataclass
class EpisodeRecord:
    """One episode's outcome; plain values only, so `to_dict` is JSON-able as is."""

    task: str
    seed: int
    split: str  # see instructions.episode_split
    phrasing: str | None  # "train", "heldout", or None for free text
    instruction: str
    target: str
    success: bool
    steps: int
    sim_time: float
    path_length: float  # of the robot (base or end effector), m
    start_distance: float  # goal distance at the start (nav: base to marker; manip: block)
    distance_to_goal: float
    spl: float | None  # success weighted by path length (navigation only)
    unsafe: bool
    collisions: int
    violations: dict[str, int]  # by category, categories with none left out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Task(abc.ABC):
    """A seeded MuJoCo task. Same seed and same actions give identical observations."""

    name: str
    action_names: tuple[str, ...]
    action_high: np.ndarray
    action_low: np.ndarray
    max_steps: int
    camera: str
    robot_bodies: tuple[str, ...]  # bodies whose contacts count as the robot's
    templates: dict[str, tuple[str, ...]]
    colours: tuple[str, ...]  # the goals an instruction may name
    experts: tuple[str, ...] = ()  # names `expert=` accepts (empty: one expert, no choice)

    def __init__(self, image_size: int = 64, supersample: int = SUPERSAMPLE) -> None:
        if supersample < 1:
            raise ValueError(f"supersample must be a whole number >= 1, got {supersample}")
        self.image_size = image_size
        # A real camera pixel integrates the light over its area, so an edge that crosses it
        # gives an intermediate colour: positions show to a fraction of a pixel. Rendering at
        # `supersample` times the size and area-averaging down gives the same (MSAA,
        # `offsamples`, costs more under llvmpipe). OpenCV's area resize is that average, ~25x
        # faster than numpy's mean over the cells (bench/sim_camera.py).
        self.supersample = supersample
        self.render_size = image_size * supersample
        self.model = mujoco.MjModel.from_xml_string(self.mjcf())
        self.model.opt.timestep = PHYSICS_DT
        self.data = mujoco.MjData(self.model)
        try:
            self.renderer = mujoco.Renderer(self.model, self.render_size, self.render_size)
        except mujoco.FatalError as e:  # the usual cause is mujoco imported before the package
            raise RuntimeError(
                f"no OpenGL context (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}); mujoco reads "
                "MUJOCO_GL once, when first imported: set it (egl or osmesa) before that"
            ) from e
        self.substeps = round(CONTROL_DT / PHYSICS_DT)
        self.safety = EpisodeSafety(self.safety_limits())
        self.monitor = self.safety.monitor
        robot_ids = {self.model.body(b).id for b in self.robot_bodies}
        self._robot_geom = np.isin(self.model.geom_bodyid, list(robot_ids))
        self._geom_body = [
            self.model.body(int(b)).name for b in self.model.geom_bodyid
        ]  # names looked up once: per-substep name lookups would cost more than the physics
        self._force = np.zeros(6)
        # the robot's contacts over the last control step's substeps (after reset: at that instant)
        self.step_contacts: list[ContactRecord] = []
        self.steps = 0
        self.seed = 0
        self.target = ""
        self.instruction = ""
        self.phrasing: str | None = "train"
        self.split = "train"
        self.done = self.success = False
        self.path_length = self.start_distance = 0.0

    # -- what a task defines ----------------------------------------------------------------
    @abc.abstractmethod
    def mjcf(self) -> str: ...

    @abc.abstractmethod
    def _layout(self, rng: np.random.Generator) -> str:
        """Place the scene for this seed; return the colour of the goal (marker or block)."""

    @abc.abstractmethod
    def _apply_action(self, action: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _check(self, now: float) -> bool:
        """Feed this step's task-specific safety inputs (contacts are handled here in the base);
        return whether the goal is reached."""

    @abc.abstractmethod
    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state (a feedback law, deterministic)."""

    @abc.abstractmethod
    def _proprio(self) -> np.ndarray: ...

    @abc.abstractmethod
    def robot_xy(self) -> np.ndarray:
        """Where the robot (base or end effector) is on the plane, for the path length."""

    @abc.abstractmethod
    def distance_to_goal(self) -> float: ...

    def safety_limits(self) -> SafetyLimits:
        return sim_limits()

    def allowed_contacts(self) -> tuple[str, ...]:
        """Bodies the robot may touch in this episode (the named object, for manipulation)."""
        return ()

    def _spl(self) -> float | None:
        return None

    def scene_state(self) -> np.ndarray | None:
        """Privileged positions the simulator knows and the camera only shows, as targets of an
        auxiliary training loss that makes the vision stem localise what the task depends on
        (None: the task defines none). Never an input to a policy."""
        return None

    # -- the episode loop -------------------------------------------------------------------
    def reset(
        self, seed: int, instruction: str | None = None, phrasing: str = "train"
    ) -> Observation:
        """A new episode. The scene follows `seed` alone (instructions.seed_split says which
        seeds are held out); the instruction is drawn from the `phrasing` template set unless
        given. A given instruction that names another colour of the scene retargets the
        episode, so a user's instruction is what success is judged against."""
        rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        self.target = self._layout(rng)
        mujoco.mj_forward(self.model, self.data)
        touching: dict[tuple[str, str], ContactRecord] = {}
        self._collect_contacts(touching)
        self.step_contacts = list(touching.values())
        self.seed, self.steps = seed, 0
        if instruction is None:
            self.instruction = lang.instruction(self.templates, self.target, rng, phrasing)
            self.phrasing = phrasing
        else:
            self.instruction = instruction
            self.phrasing = lang.phrasing_of(instruction, self.templates)
            named = lang.named_colour(instruction)
            if named in self.colours:
                self.target = named
        self.split = lang.episode_split(seed, self.phrasing)
        self.safety.start(f"{self.name}-{seed}", self.sim_time)
        self.done = self.success = False
        self.path_length = 0.0
        self._last_xy = self.robot_xy()
        self.start_distance = self.distance_to_goal()
        return self.observe()

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action for CONTROL_DT. Non-finite entries become 0 (stop), so a broken
        policy output cannot poison the physics state."""
        action = np.nan_to_num(np.asarray(action, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        self._apply_action(np.clip(action, self.action_low, self.action_high))
        touching: dict[tuple[str, str], ContactRecord] = {}
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
            self._collect_contacts(touching)
        # What this step touched, not what is left at its end: the contacts topic and the
        # in-process gate publish these, so the gate sees every bump the task counts.
        self.step_contacts = list(touching.values())
        self.steps += 1
        now = self.sim_time
        contacts = [c.pair for c in self.step_contacts]
        self.safety.contacts(
            robot_contacts(contacts, self.robot_bodies, self.allowed_contacts()), now
        )
        xy = self.robot_xy()
        self.path_length += float(np.linalg.norm(xy - self._last_xy))
        self._last_xy = xy
        success = self._check(now)
        self.success = self.success or success
        self.done = success or self.steps >= self.max_steps
        return StepResult(self.observe(), self.done, success, self.safety.pop_events())

    def _collect_contacts(self, touching: dict[tuple[str, str], ContactRecord]) -> None:
        """Robot contacts at every physics substep, largest force per body pair (with that
        contact's point and normal): a bump shorter than a control period still counts, and a
        contact that flickers within one period is still one touch (the monitor debounces
        across periods)."""
        d = self.data
        if d.ncon == 0:
            return
        geoms = d.contact.geom
        hits = self._robot_geom[geoms]
        if not hits.any():  # the common case; cheap enough to check at every substep
            return
        for i in np.flatnonzero(hits.any(axis=1)):
            g1, g2 = geoms[i]
            pair = (self._geom_body[g1], self._geom_body[g2])
            mujoco.mj_contactForce(self.model, d, int(i), self._force)
            force = abs(float(self._force[0]))
            if pair not in touching or force > touching[pair].force:
                touching[pair] = self._contact_record(int(i), force)

    def _contact_record(self, i: int, force: float) -> ContactRecord:
        """Contact `i` of the current state; MuJoCo's frame row 0 is the normal from geom1 to
        geom2."""
        c = self.data.contact[i]
        return ContactRecord(
            self._geom_body[c.geom1],
            self._geom_body[c.geom2],
            force,
            tuple(float(v) for v in c.pos),
            tuple(float(v) for v in c.frame[:3]),
        )

    @property
    def sim_time(self) -> float:
        return float(self.data.time)

    def observe(self) -> Observation:
        return Observation(self.render(), self.instruction, self._proprio(), self.sim_time)

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=self.camera)
        image = self.renderer.render()
        if self.supersample == 1:
            return image.copy()
        return fit_frame(image, self.image_size)  # the one camera-frame resize

    def contacts(self) -> list[tuple[str, str, float]]:
        """All contacts at this instant as (body, other body, normal force). What a contacts
        topic publishes is `step_contacts` instead: the robot's contacts over the last control
        step's substeps, each with its point and normal."""
        out = []
        for i in range(self.data.ncon):
            mujoco.mj_contactForce(self.model, self.data, i, self._force)
            out.append(self._contact_record(i, abs(float(self._force[0]))).pair)
        return out

    # -- results ----------------------------------------------------------------------------
    def record(self) -> EpisodeRecord:
        counts = self.safety.counts()
        return EpisodeRecord(
            task=self.name,
            seed=self.seed,
            split=self.split,
            phrasing=self.phrasing,
            instruction=self.instruction,
            target=self.target,
            success=bool(self.success),
            steps=self.steps,
            sim_time=self.sim_time,
            path_length=self.path_length,
            start_distance=self.start_distance,
            distance_to_goal=self.distance_to_goal(),
            spl=self._spl(),
            unsafe=self.safety.unsafe,
            collisions=counts.get("collision", 0),
            violations=counts,
        )

    def metrics(self) -> dict[str, Any]:
        """The episode so far as a plain dict (what evaluation aggregates and reports)."""
        return self.record().to_dict()

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
