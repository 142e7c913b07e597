"""Manipulation: a planar pusher over a table with three coloured blocks, a target disc and an
obstacle, seen by a fixed overhead camera.

Action: pusher (end-effector) velocity (vx, vy) in m/s. Success: the named block's centre within
SUCCESS_RADIUS of the target's. Violations follow the GLUESTICK authors' LIBERO monitor: robot
contact with anything but the named block, a joint within 5 % of its range from a limit, and any
block faster than 1.0 m/s after the first 5 steps.

The table's dimensions live in `manip_geometry`, the scripted experts in `manip_experts` (chosen
by name), their route planning in `manip_routing`; this module is the scene.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from vla_pruned_ros.sim.base import SUPERSAMPLE, Task
from vla_pruned_ros.sim.instructions import MANIP_TEMPLATES, RGBA
from vla_pruned_ros.sim.manip_experts import EXPERTS
from vla_pruned_ros.sim.manip_geometry import (
    BLOCKS,
    HALF_BLOCK,
    JOINT_RANGE,
    JOINTS,
    SUCCESS_RADIUS,
    TIP_R,
    PushLine,
    push_line,
)

STATE_SCALE = 0.4  # scene_state() divides distances by this, so they span about [-1, 1]
STATE_NAMES = (
    "named_dx", "named_dy", "target_dx", "target_dy", "obstacle_dx", "obstacle_dy",
    "other1_dx", "other1_dy", "other2_dx", "other2_dy", "push_dir_x", "push_dir_y",
    "tip_along", "tip_lateral",
)  # fmt: skip


class ManipTask(Task):
    name = "manip"
    action_names = ("vx", "vy")
    action_high = np.array([0.3, 0.3])
    action_low = -action_high
    max_steps = 150
    camera = "overhead"
    robot_bodies = ("pusher",)
    templates = MANIP_TEMPLATES
    colours = BLOCKS

    experts = tuple(EXPERTS)

    def __init__(
        self, image_size: int = 64, expert: str = "routing", supersample: int = SUPERSAMPLE
    ) -> None:
        if expert not in EXPERTS:
            raise ValueError(f"unknown manipulation expert {expert!r}; known: {self.experts}")
        super().__init__(image_size, supersample)
        self.expert = expert
        self._expert = EXPERTS[expert]()
        m = self.model
        self._tip_joints = [m.joint(j).id for j in JOINTS]
        self._tip_qpos = m.jnt_qposadr[self._tip_joints]
        self._tip_dof = m.jnt_dofadr[self._tip_joints]
        ids = {c: m.joint(f"block_{c}").id for c in BLOCKS}
        self._block_qpos = {c: int(m.jnt_qposadr[i]) for c, i in ids.items()}
        self._block_dof = {c: int(m.jnt_dofadr[i]) for c, i in ids.items()}

    def mjcf(self) -> str:
        s = self.render_size
        blocks = "".join(
            f'<body name="block_{c}" pos="{i} 2 {HALF_BLOCK}"><freejoint name="block_{c}"/>'
            f'<geom type="box" size="{HALF_BLOCK} {HALF_BLOCK} {HALF_BLOCK}" mass="0.1" '
            f'rgba="{RGBA[c]}" contype="3" conaffinity="3" friction="0.6 0.005 0.0001"/></body>'
            for i, c in enumerate(BLOCKS)
        )
        return f"""
<mujoco model="manip">
  <option integrator="implicitfast"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="{s}" offheight="{s}"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.4 0.4 0.4"/></visual>
  <worldbody>
    <light pos="0 0 2" dir="0 0 -1" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="plane" size="0.6 0.6 0.05" rgba="0.72 0.62 0.5 1"
          contype="1" conaffinity="1"/>
    <body name="target" pos="0 0 0.001"><geom type="cylinder" size="{SUCCESS_RADIUS + 0.01} 0.001"
          rgba="0.95 0.95 0.95 1" contype="0" conaffinity="0" group="2"/></body>
    <body name="obstacle" pos="0 0 0.04"><geom name="obstacle" type="box" size="0.04 0.04 0.04"
          rgba="0.15 0.15 0.15 1" contype="2" conaffinity="2"/></body>
    {blocks}
    <body name="pusher" pos="0 0 {TIP_R + 0.005}">
      <joint name="x" type="slide" axis="1 0 0" range="-{JOINT_RANGE} {JOINT_RANGE}"/>
      <joint name="y" type="slide" axis="0 1 0" range="-{JOINT_RANGE} {JOINT_RANGE}"/>
      <geom name="pusher" type="sphere" size="{TIP_R}" mass="0.5" rgba="0.95 0.5 0.1 1"
            contype="2" conaffinity="2"/>
    </body>
    <camera name="overhead" pos="0 -0.2 0.95" xyaxes="1 0 0 0 0.97 0.24" fovy="52"/>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="x" kv="60"/>
    <velocity name="vy" joint="y" kv="60"/>
  </actuator>
</mujoco>"""

    # -- scene ------------------------------------------------------------------------------
    def _layout(self, rng: np.random.Generator) -> str:
        m = self.model
        target_pos = rng.uniform(-0.25, 0.25, 2)
        named = BLOCKS[int(rng.integers(len(BLOCKS)))]
        for _ in range(1000):
            angle = rng.uniform(-math.pi, math.pi)
            dist = rng.uniform(0.15, 0.28)
            start = target_pos + dist * np.array([math.cos(angle), math.sin(angle)])
            if np.all(np.abs(start) < 0.33):
                break
        push_dir = (target_pos - start) / np.linalg.norm(target_pos - start)
        approach = start - 0.12 * push_dir  # the pusher comes from behind the block

        def clear_of_push(p: np.ndarray, clearance: float) -> bool:
            seg, rel = target_pos - approach, p - approach
            t = float(np.clip(np.dot(rel, seg) / np.dot(seg, seg), 0, 1))
            return float(np.linalg.norm(rel - t * seg)) > clearance

        placed = [start, target_pos]
        positions = {named: start}
        for name in [*(b for b in BLOCKS if b != named), "obstacle", "pusher"]:
            for _ in range(1000):
                p = rng.uniform(-0.38, 0.38, 2)
                if clear_of_push(p, 0.11) and all(np.linalg.norm(p - q) > 0.12 for q in placed):
                    break
            placed.append(p)
            positions[name] = p
        m.body("target").pos[:2] = target_pos
        m.body("obstacle").pos[:2] = positions["obstacle"]
        self.data.qpos[self._tip_qpos] = positions["pusher"]
        for c in BLOCKS:
            adr = self._block_qpos[c]
            yaw = rng.uniform(-math.pi / 4, math.pi / 4)
            self.data.qpos[adr : adr + 7] = [*positions[c], HALF_BLOCK, math.cos(yaw / 2), 0, 0,
                                             math.sin(yaw / 2)]  # fmt: skip
        self.target_pos = target_pos
        self.obstacle_pos = positions["obstacle"]
        return named

    def tip(self) -> np.ndarray:
        """Pusher (end-effector) position on the table; also its joint positions."""
        return self.data.qpos[self._tip_qpos].copy()

    def block_xy(self, colour: str) -> np.ndarray:
        adr = self._block_qpos[colour]
        return self.data.qpos[adr : adr + 2].copy()

    def block_speed(self, colour: str) -> float:
        """Linear speed of a block's centre (m/s), what the LIBERO monitor thresholds."""
        adr = self._block_dof[colour]
        return float(np.linalg.norm(self.data.qvel[adr : adr + 3]))

    def block_distance(self) -> float:
        return float(np.linalg.norm(self.block_xy(self.target) - self.target_pos))

    def distance_to_goal(self) -> float:
        return self.block_distance()

    def robot_xy(self) -> np.ndarray:
        return self.tip()

    def scene_state(self) -> np.ndarray:
        """Where the named block, the target, the obstacle and the other blocks (in colour
        order) are from the pusher, the push direction, and the pusher's place relative to the
        push line (behind the block / to its side: the geometry the v4 policy confused,
        MODEL_CARD.md). Names in STATE_NAMES, distances divided by STATE_SCALE. All relative to
        the pusher, so a training image shifted by a few pixels keeps the same targets."""
        tip = self.tip()
        _, _, d, _, along, lateral = self.push_line()
        others = [self.block_xy(c) for c in BLOCKS if c != self.target]
        places = [self.block_xy(self.target), self.target_pos, self.obstacle_pos, *others]
        rel = np.concatenate([p - tip for p in places]) / STATE_SCALE
        line = np.clip(np.array([along, lateral]) / STATE_SCALE, -1.0, 1.0)  # near is what counts
        return np.concatenate([rel, d, line]).astype(np.float32)

    # -- dynamics and safety ----------------------------------------------------------------
    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action

    def allowed_contacts(self) -> tuple[str, ...]:
        return (f"block_{self.target}",)

    def _check(self, now: float) -> bool:
        lo, hi = self.model.jnt_range[self._tip_joints].T
        self.safety.joints(JOINTS, self.tip(), lo, hi, now)
        speeds = {f"block_{c}": self.block_speed(c) for c in BLOCKS}
        self.safety.object_speeds(speeds, self.steps, now)
        return self.block_distance() <= SUCCESS_RADIUS

    def _proprio(self) -> np.ndarray:
        return np.array([*self.tip(), *self.data.qvel[self._tip_dof]], np.float32)

    # -- expert -----------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The label of the expert chosen by name (`manip_experts.EXPERTS`)."""
        return self._expert.action(self)

    def push_weight(self) -> float:
        """How much of the expert's label is pushing along the line (1) rather than walking
        around to get behind the block (0): the routing expert switches at 1.2 cm of lateral
        error, the smooth one blends over 1-3 cm. Diagnostics use it to tell pushing from
        walking around."""
        return self._expert.push_weight(self.push_line())

    def push_line(self) -> PushLine:
        """The named block's push line toward the target, seen from the pusher."""
        return push_line(self.block_xy(self.target), self.target_pos, self.tip())

    def place_tip(self, xy: np.ndarray) -> None:
        """Move the pusher to `xy` (its velocity kept) and update the derived state: what a
        probe of the expert's label around a state does."""
        self.data.qpos[self._tip_qpos] = xy
        mujoco.mj_forward(self.model, self.data)
