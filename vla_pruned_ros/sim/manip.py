"""Manipulation: a planar pusher over a table with three coloured blocks, a target disc and an
obstacle, seen by a fixed overhead camera.

Action: pusher (end-effector) velocity (vx, vy) in m/s. Success: the named block's centre within
SUCCESS_RADIUS of the target's. Violations follow the GLUESTICK authors' LIBERO monitor: robot
contact with anything but the named block, a joint within 5 % of its range from a limit, and any
block faster than 1.0 m/s after the first 5 steps.
"""

from __future__ import annotations

import math

import numpy as np

from vla_pruned_ros.sim.base import SUPERSAMPLE, Task
from vla_pruned_ros.sim.instructions import MANIP_TEMPLATES, RGBA

BLOCKS = ("red", "green", "blue")
HALF_BLOCK = 0.032
TIP_R = 0.025
JOINT_RANGE = 0.5
SUCCESS_RADIUS = 0.05
JOINTS = ("x", "y")
PIXEL = 0.0145  # table width covered by one pixel of the 64x64 overhead image (m)
REACH = 0.43  # the expert keeps the tip inside this (joint-limit band starts at 0.45)
# Tip-centre distances the expert keeps while moving around: circumscribed radius + tip radius
# + a margin of about one control step of travel.
BLOCK_CLEARANCE = HALF_BLOCK * math.sqrt(2) + TIP_R + 0.02
OBSTACLE_CLEARANCE = 0.04 * math.sqrt(2) + TIP_R + 0.02
ARC_BERTH = 0.02  # the "arc" expert's extra distance from the named block while walking round
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

    experts = ("routing", "smooth", "wide", "arc")

    def __init__(
        self, image_size: int = 64, expert: str = "routing", supersample: int = SUPERSAMPLE
    ) -> None:
        if expert not in self.experts:
            raise ValueError(f"unknown manipulation expert {expert!r}; known: {self.experts}")
        super().__init__(image_size, supersample)
        self.expert = expert
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
        _, _, d, _, along, lateral = self._push_line()
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
        """Get behind the named block on the line to the target, routing around the other
        blocks, the obstacle and the named block itself on a visibility graph (a reactive field
        alone ran into the obstacle in ~1.5 % of episodes), then push along that line,
        correcting sideways drift. Evaluated from the current state only, so it recovers from
        perturbed rollouts.

        `expert="routing"` switches from routing to pushing once the pusher is within 1.2 cm of
        the line; `expert="smooth"` blends the two over a few centimetres, so that states one
        image pixel apart get similar labels (what a policy that sees the scene at 64x64 can
        learn by regression). `expert="wide"` keeps pushing up to 3-6 cm of lateral error,
        slowing down and sliding back onto the line, instead of walking around the block
        (narrowing to the smooth band within 10 cm of the target, where the wide band stalls):
        the policy's failures sit where the smooth expert would walk around
        (research/manip_failures.py). At equal training it did worse than smooth (MODEL_CARD.md,
        "Tried after v4"), so smooth stays vla-train's default. `expert="arc"` is smooth with
        a 2 cm wider berth around the named block while walking around it: the policy's
        failures drag the block round the target because it presses in where the expert backs
        off (research/manip_failures.py), and a wider arc keeps the two behaviours further apart
        in the image."""
        tip = self.tip()
        block, behind, d, remaining, along, lateral = self._push_line()
        speed = 0.12 if remaining > 0.06 else 0.06
        if self.expert == "wide":
            speed *= float(np.clip(1.0 - abs(lateral) / 0.06, 0.2, 1.0))
        correction = (behind - tip) - np.dot(behind - tip, d) * d  # sideways error only
        push = np.clip(speed * d + 4.0 * correction, -0.3, 0.3)
        w = self._push_weight(along, lateral, remaining)
        if w >= 1.0:
            return push
        route = self._route(tip, block, behind, d)
        return route if w <= 0.0 else np.clip(w * push + (1.0 - w) * route, -0.3, 0.3)

    def push_weight(self) -> float:
        """How much of the expert's label is pushing along the line (1) rather than walking
        around to get behind the block (0): the routing expert switches at 1.2 cm of lateral
        error, the smooth one blends over 1-3 cm, the wide one over 3-6 cm. Diagnostics use it
        to tell pushing from walking around."""
        _, _, _, remaining, along, lateral = self._push_line()
        return self._push_weight(along, lateral, remaining)

    def _push_weight(self, along: float, lateral: float, remaining: float) -> float:
        if self.expert in ("smooth", "wide", "arc"):
            hi, width = 0.03, 0.02  # blend over lateral errors hi - width .. hi (m)
            if self.expert == "wide":  # 3-6 cm, narrowing to 1-3 cm near the target
                k = float(np.clip((remaining - 0.05) / 0.05, 0.0, 1.0))
                hi, width = hi + 0.03 * k, width + 0.01 * k
            w = float(np.clip((hi - abs(lateral)) / width, 0.0, 1.0))
            return w * float(np.clip((along - HALF_BLOCK + 0.005) / 0.015, 0.0, 1.0))
        return 1.0 if along > HALF_BLOCK and abs(lateral) < 0.012 else 0.0

    def _push_line(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]:
        """The named block, the point behind it on the line to the target, that line's
        direction, the block's distance to the target, and the pusher's position relative to
        the line: how far behind the block along it, and how far to the side."""
        block = self.block_xy(self.target)
        to_target = self.target_pos - block
        remaining = float(np.linalg.norm(to_target))
        d = to_target / max(remaining, 1e-6)
        rel = self.tip() - block
        along = float(np.dot(rel, -d))
        lateral = float(rel[0] * d[1] - rel[1] * d[0])
        return block, block - d * (HALF_BLOCK + TIP_R + 0.012), d, remaining, along, lateral

    def label_jump(self, distance: float = PIXEL, directions: int = 8, norm: str = "max") -> float:
        """The largest change of the expert's label, as a share of the action bound, when the
        pusher is moved by `distance` in any of `directions` directions (state restored after).
        A policy that sees the table at 64x64 cannot tell states one pixel apart, so labels that
        jump between them look like several modes to it: what the smooth expert is for.
        `norm`: "max" (largest component) or "l2"."""
        import mujoco

        if norm not in ("max", "l2"):
            raise ValueError(f"norm must be 'max' or 'l2', not {norm!r}")
        label, tip = self.expert_action(), self.tip()
        angles = np.linspace(0.0, 2.0 * math.pi, directions, endpoint=False)
        largest = 0.0
        for a in angles:
            self.data.qpos[self._tip_qpos] = tip + distance * np.array([math.cos(a), math.sin(a)])
            mujoco.mj_forward(self.model, self.data)
            change = self.expert_action() - label
            size = np.abs(change).max() if norm == "max" else np.linalg.norm(change)
            largest = max(largest, float(size) / float(self.action_high[0]))
        self.data.qpos[self._tip_qpos] = tip
        mujoco.mj_forward(self.model, self.data)
        return largest

    def _route(
        self, tip: np.ndarray, block: np.ndarray, behind: np.ndarray, d: np.ndarray
    ) -> np.ndarray:
        """Toward a point behind the block, around everything else on the table."""
        berth = ARC_BERTH if self.expert == "arc" else 0.0
        goal = np.clip(behind - d * (0.02 + berth), -REACH, REACH)
        others = [(self.block_xy(c), BLOCK_CLEARANCE) for c in BLOCKS if c != self.target]
        named = (block, BLOCK_CLEARANCE - 0.005 + berth)
        discs = [named, *others, (self.obstacle_pos, OBSTACLE_CLEARANCE)]
        way = _next_waypoint(tip, goal, discs)
        desired = way - tip
        dist = float(np.linalg.norm(desired))
        v = desired / max(dist, 1e-6) * min(0.25, 2.5 * float(np.linalg.norm(goal - tip)) + 0.05)
        for centre, radius in discs:  # inside a disc (pushed there by noise): leave it first
            away = tip - centre
            gap = float(np.linalg.norm(away)) - radius
            if gap < 0.0:
                n = away / max(np.linalg.norm(away), 1e-6)
                v = v + 0.25 * min(1.0, -gap / 0.02) * n
        v[(tip >= REACH) & (v > 0)] = 0.0  # never drive further into a joint-limit band
        v[(tip <= -REACH) & (v < 0)] = 0.0
        return np.clip(v, -0.3, 0.3)


def _seg_clear(a: np.ndarray, b: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each segment a[i] -> b[j] misses every disc: a bool matrix (len(a), len(b))."""
    seg = b[None, :, :] - a[:, None, :]  # (A, B, 2)
    rel = centres[None, None, :, :] - a[:, None, None, :]  # (A, 1, D, 2)
    length2 = np.maximum(np.sum(seg * seg, -1), 1e-12)[..., None]  # (A, B, 1)
    t = np.clip(np.sum(rel * seg[:, :, None, :], -1) / length2, 0.0, 1.0)  # (A, B, D)
    closest = a[:, None, None, :] + t[..., None] * seg[:, :, None, :]
    dist = np.linalg.norm(closest - centres[None, None], axis=-1)
    return np.all(dist >= radii, axis=-1)


def _next_waypoint(
    tip: np.ndarray, goal: np.ndarray, discs: list[tuple[np.ndarray, float]]
) -> np.ndarray:
    """The first corner of the shortest way to `goal` around the discs, on a small visibility
    graph (points on a ring around each disc). Discs holding the tip or the goal are ignored
    for the edges that leave or enter them, so a perturbed tip can always get out."""
    centres = np.array([c for c, _ in discs])
    radii = np.array([r for _, r in discs])
    if _seg_clear(tip[None], goal[None], *_outside(tip, goal, centres, radii))[0, 0]:
        return goal
    nodes, to_goal = _graph(goal, centres, radii)
    total = np.where(
        _seg_clear(tip[None], nodes, *_outside(tip, None, centres, radii))[0],
        np.linalg.norm(nodes - tip, axis=1) + to_goal,
        np.inf,
    )
    best = int(np.argmin(total))
    return nodes[best] if np.isfinite(total[best]) else goal


_GRAPHS: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _graph(
    goal: np.ndarray, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Graph nodes (the goal first) and each one's shortest distance to the goal. Cached: the
    scene stands still while the tip travels, so only the tip's own edges change per step."""
    goal, centres = np.round(goal, 3), np.round(centres, 3)  # the graph depends on the key
    key = np.concatenate([goal, centres.ravel(), radii]).tobytes()  # alone: deterministic
    if key in _GRAPHS:
        return _GRAPHS[key]
    angles = np.linspace(0.0, 2 * math.pi, 8, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], -1) / math.cos(math.pi / 8)
    ring_pts = (centres[:, None, :] + (radii[:, None, None] + 0.005) * ring[None]).reshape(-1, 2)
    inside = np.linalg.norm(ring_pts[:, None] - centres[None], axis=-1) < radii[None] - 1e-9
    nodes = np.vstack([goal, ring_pts[~inside.any(1)]])
    clear = _seg_clear(nodes, nodes, centres, radii)
    clear[0] = _seg_clear(goal[None], nodes, *_outside(goal, None, centres, radii))[0]
    clear = clear | clear.T
    cost = np.where(clear, np.linalg.norm(nodes[:, None] - nodes[None], axis=-1), np.inf)
    dist = np.full(len(nodes), np.inf)
    dist[0] = 0.0
    done = np.zeros(len(nodes), bool)
    for _ in range(len(nodes)):  # Dijkstra on a dense matrix: a few dozen nodes
        i = int(np.argmin(np.where(done, np.inf, dist)))
        if not np.isfinite(dist[i]):
            break
        done[i] = True
        dist = np.minimum(dist, dist[i] + cost[i])
    if len(_GRAPHS) > 256:
        _GRAPHS.clear()
    _GRAPHS[key] = (nodes, dist)
    return nodes, dist


def _outside(
    p: np.ndarray, q: np.ndarray | None, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The discs that hold neither p nor q (those that do cannot be avoided from there)."""
    keep = np.linalg.norm(centres - p, axis=1) >= radii
    if q is not None:
        keep &= np.linalg.norm(centres - q, axis=1) >= radii
    return centres[keep], radii[keep]
