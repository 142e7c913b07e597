"""Navigation: a round mobile base in a walled arena with obstacles and four coloured markers.

Action: (linear_x m/s, angular_z rad/s) in the base frame, like a Twist to a diff-drive base.
Success: the base centre within SUCCESS_RADIUS of the named marker. Collision: any contact
between the base and a wall or obstacle above the force threshold (counted once per contact
onset). Markers are visual only, so driving past one is not a collision.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from vla_pruned_ros.sim.base import Task
from vla_pruned_ros.sim.instructions import COLOURS, NAV_TEMPLATES, RGBA

HALF = 2.0  # arena half-size (m), inside the walls
ROBOT_R = 0.15
SUCCESS_RADIUS = 0.3
N_OBSTACLES = 3
MARKER_GROUP = 2  # geom group of markers: rays ignore it (groups 0-2 are rendered)


class NavTask(Task):
    name = "nav"
    action_names = ("linear_x", "angular_z")
    action_high = np.array([0.5, 2.0])
    action_low = -action_high
    max_steps = 150
    camera = "ego"
    robot_bodies = ("base",)
    templates = NAV_TEMPLATES
    colours = COLOURS

    def mjcf(self) -> str:
        s = self.render_size
        walls = "".join(
            f'<geom name="wall_{n}" type="box" pos="{x} {y} 0.15" size="{sx} {sy} 0.15" '
            f'rgba="0.55 0.5 0.45 1" contype="2" conaffinity="2"/>'
            for n, x, y, sx, sy in (
                ("n", 0, HALF + 0.05, HALF + 0.1, 0.05),
                ("s", 0, -HALF - 0.05, HALF + 0.1, 0.05),
                ("e", HALF + 0.05, 0, 0.05, HALF + 0.1),
                ("w", -HALF - 0.05, 0, 0.05, HALF + 0.1),
            )
        )
        obstacles = "".join(
            f'<body name="obstacle_{i}" pos="{10 + i} 10 0"><geom name="obstacle_{i}" '
            f'type="cylinder" size="0.15 0.2" pos="0 0 0.2" rgba="0.25 0.25 0.25 1" '
            f'contype="2" conaffinity="2"/></body>'
            for i in range(N_OBSTACLES)
        )
        markers = "".join(
            f'<body name="marker_{c}" pos="0 0 0"><geom type="cylinder" size="0.13 0.4" '
            f'pos="0 0 0.4" rgba="{RGBA[c]}" contype="0" conaffinity="0" '
            f'group="{MARKER_GROUP}"/></body>'
            for c in COLOURS
        )
        return f"""
<mujoco model="nav">
  <option integrator="implicitfast"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="{s}" offheight="{s}"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.4 0.4 0.4"/></visual>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="floor" type="plane" size="{HALF + 0.5} {HALF + 0.5} 0.1" rgba="0.75 0.75 0.72 1"
          contype="1" conaffinity="1"/>
    {walls}{obstacles}{markers}
    <body name="base" pos="0 0 0.08">
      <joint name="x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="yaw" type="hinge" axis="0 0 1" damping="0"/>
      <geom name="base" type="cylinder" size="{ROBOT_R} 0.06" mass="5" rgba="0.9 0.9 0.9 1"
            contype="2" conaffinity="2"/>
      <geom type="box" size="0.04 0.1 0.02" pos="0.11 0 0.07" rgba="0.2 0.2 0.2 1"
            contype="0" conaffinity="0" mass="0.01"/>
      <camera name="ego" pos="0.1 0 0.12" xyaxes="0 -1 0 0.2 0 1" fovy="110"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="x" kv="400"/>
    <velocity name="vy" joint="y" kv="400"/>
    <velocity name="wz" joint="yaw" kv="40"/>
  </actuator>
</mujoco>"""

    # -- scene ------------------------------------------------------------------------------
    def _layout(self, rng: np.random.Generator) -> str:
        m = self.model
        placed: list[tuple[np.ndarray, float]] = []

        def sample(clearance: float, margin: float) -> np.ndarray:
            for _ in range(1000):
                p = rng.uniform(-HALF + margin, HALF - margin, 2)
                if all(np.linalg.norm(p - q) >= clearance + r for q, r in placed):
                    return p
            raise RuntimeError("could not place the scene")  # pragma: no cover

        self.markers = {}
        for c in COLOURS:
            p = sample(0.9, 0.35)
            placed.append((p, 0.0))
            self.markers[c] = p
            m.body(f"marker_{c}").pos[:2] = p
        target = COLOURS[int(rng.integers(len(COLOURS)))]
        start = sample(0.6, 0.4)
        while np.linalg.norm(start - self.markers[target]) < 1.2:
            start = sample(0.6, 0.4)
        placed.append((start, 0.3))
        self.obstacles = []
        n_obstacles = int(rng.integers(1, N_OBSTACLES + 1))
        for i in range(N_OBSTACLES):
            body, geom = m.body(f"obstacle_{i}"), m.geom(f"obstacle_{i}")
            if i < n_obstacles:
                r = float(rng.uniform(0.12, 0.2))
                p = sample(0.45 + r, 0.3 + r)
                placed.append((p, r))
                body.pos[:2], geom.size[0] = p, r
                self.obstacles.append((p, r))
            else:
                body.pos[:2] = (10 + i, 10)
        # Start roughly facing the goal (within +-40 deg): the ego camera (110 deg) then sees it,
        # so the instruction is answerable from the first frame without memory.
        to_goal = self.markers[target] - start
        yaw = math.atan2(to_goal[1], to_goal[0]) + rng.uniform(-0.7, 0.7)
        self.data.qpos[:3] = (*start, yaw)
        return target

    # -- dynamics ---------------------------------------------------------------------------
    def _apply_action(self, action: np.ndarray) -> None:
        v, w = action
        yaw = self.data.qpos[2]
        self.data.ctrl[:] = (v * math.cos(yaw), v * math.sin(yaw), w)

    def _check(self, now: float) -> bool:
        return self.distance_to_goal() <= SUCCESS_RADIUS

    def robot_xy(self) -> np.ndarray:
        return self.data.qpos[:2].copy()

    def distance_to_goal(self) -> float:
        return float(np.linalg.norm(self.data.qpos[:2] - self.markers[self.target]))

    def _proprio(self) -> np.ndarray:
        return np.array([*self.data.qpos[:3], *self.data.qvel[:3]], np.float32)

    def ranges(self, n: int = 36, max_range: float = 6.0) -> np.ndarray:
        """A planar range scan from the base centre (markers ignored), for proximity checks."""
        base_id = self.model.body("base").id
        groups = np.ones(6, np.uint8)
        groups[MARKER_GROUP] = 0
        origin = np.array([*self.data.qpos[:2], 0.1])
        out, geomid = np.full(n, max_range), np.zeros(1, np.int32)
        angles = np.linspace(0, 2 * math.pi, n, endpoint=False) + self.data.qpos[2]
        for i, a in enumerate(angles):
            ray = np.array([math.cos(a), math.sin(a), 0.0])
            d = mujoco.mj_ray(self.model, self.data, origin, ray, groups, 1, base_id, geomid)
            if 0 <= d < max_range:
                out[i] = d
        return out

    # -- expert -----------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """Attraction to the goal plus repulsion and a tangential slide around obstacles and
        walls; steers toward the resulting direction. A feedback law: it recovers from any
        state a perturbed rollout reaches."""
        pos, yaw = self.data.qpos[:2], self.data.qpos[2]
        to_goal = self.markers[self.target] - pos
        dist = float(np.linalg.norm(to_goal))
        desired = to_goal / max(dist, 1e-6)
        for centre, radius in self.obstacles:
            away = pos - centre
            gap = np.linalg.norm(away) - radius - ROBOT_R
            if gap < 0.5:
                n = away / np.linalg.norm(away)
                tangent = np.array([-n[1], n[0]])
                if np.dot(tangent, to_goal) < 0:
                    tangent = -tangent
                strength = (0.5 - gap) / 0.5
                desired = desired + 2.0 * strength * n + 2.5 * strength * tangent
        for axis in range(2):
            for sign in (-1, 1):
                gap = HALF - sign * pos[axis] - ROBOT_R
                if gap < 0.3:
                    push = np.zeros(2)
                    push[axis] = -sign * (0.3 - gap) / 0.3 * 2.0
                    desired = desired + push
        heading = math.atan2(desired[1], desired[0])
        err = (heading - yaw + math.pi) % (2 * math.pi) - math.pi
        w = float(np.clip(3.0 * err, -2.0, 2.0))
        v = 0.45 * max(0.0, math.cos(err)) ** 3
        v = min(v, 0.2 + dist)
        return np.array([v, w])

    # -- results ----------------------------------------------------------------------------
    def _spl(self) -> float:
        """Success weighted by (shortest path / path taken); the shortest path ends on the
        success circle, not at the marker."""
        shortest = max(0.0, self.start_distance - SUCCESS_RADIUS)
        return float(self.success) * shortest / max(self.path_length, shortest, 1e-6)
