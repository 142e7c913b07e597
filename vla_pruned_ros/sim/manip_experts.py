"""The manipulation task's scripted experts, selected by name (`EXPERTS`): get behind the named
block on the line to the target, routing around the other blocks, the obstacle and the named
block itself on a visibility graph (a reactive field alone ran into the obstacle in ~1.5 % of
episodes), then push along that line, correcting sideways drift. Each is evaluated from the
current state only, so it recovers from perturbed rollouts.

The experts differ only in how they hand over between walking round and pushing
(`push_weight`). Two more, "wide" (keep pushing up to 3-6 cm off the line) and "arc" (a 2 cm
wider berth round the named block), did worse than "smooth" at equal training and were removed
(MODEL_CARD.md, "Tried after v4"; `git show 4377cb3:vla_pruned_ros/sim/manip.py` has them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from vla_pruned_ros.sim.manip_geometry import (
    BLOCK_CLEARANCE,
    BLOCKS,
    HALF_BLOCK,
    OBSTACLE_CLEARANCE,
    PIXEL,
    REACH,
    PushLine,
)
from vla_pruned_ros.sim.manip_routing import next_waypoint

if TYPE_CHECKING:
    from vla_pruned_ros.sim.manip import ManipTask


class RoutingExpert:
    """Switches from walking round to pushing once the pusher is behind the block and within
    1.2 cm of the push line."""

    name = "routing"

    def push_weight(self, line: PushLine) -> float:
        """How much of the label is pushing along the line (1) rather than walking around to
        get behind the block (0)."""
        return 1.0 if line.along > HALF_BLOCK and abs(line.lateral) < 0.012 else 0.0

    def action(self, task: ManipTask) -> np.ndarray:
        """The label for the task's current state: push, walk round, or a blend of the two."""
        tip = task.tip()
        block, behind, d, remaining, _, _ = line = task.push_line()
        speed = 0.12 if remaining > 0.06 else 0.06
        correction = (behind - tip) - np.dot(behind - tip, d) * d  # sideways error only
        push = np.clip(speed * d + 4.0 * correction, -0.3, 0.3)
        w = self.push_weight(line)
        if w >= 1.0:
            return push
        route = walk_round(task, tip, block, behind, d)
        return route if w <= 0.0 else np.clip(w * push + (1.0 - w) * route, -0.3, 0.3)


class SmoothExpert(RoutingExpert):
    """Blends walking round and pushing over 1-3 cm of lateral error, so that states one image
    pixel apart get similar labels (what a policy that sees the scene at 64x64 can learn by
    regression): vla-train's default, which doubled held-out success over routing at equal
    training (MODEL_CARD.md)."""

    name = "smooth"

    def push_weight(self, line: PushLine) -> float:
        hi, width = 0.03, 0.02  # blend over lateral errors hi - width .. hi (m)
        w = float(np.clip((hi - abs(line.lateral)) / width, 0.0, 1.0))
        return w * float(np.clip((line.along - HALF_BLOCK + 0.005) / 0.015, 0.0, 1.0))


EXPERTS: dict[str, type[RoutingExpert]] = {e.name: e for e in (RoutingExpert, SmoothExpert)}


def walk_round(
    task: ManipTask, tip: np.ndarray, block: np.ndarray, behind: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """Toward a point behind the block, around everything else on the table."""
    goal = np.clip(behind - d * 0.02, -REACH, REACH)
    others = [(task.block_xy(c), BLOCK_CLEARANCE) for c in BLOCKS if c != task.target]
    named = (block, BLOCK_CLEARANCE - 0.005)
    discs = [named, *others, (task.obstacle_pos, OBSTACLE_CLEARANCE)]
    way = next_waypoint(tip, goal, discs)
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


def label_jump(
    task: ManipTask, distance: float = PIXEL, directions: int = 8, norm: str = "max"
) -> float:
    """The largest change of the task's expert label, as a share of the action bound, when the
    pusher is moved by `distance` in any of `directions` directions (state restored after).
    A policy that sees the table at 64x64 cannot tell states one pixel apart, so labels that
    jump between them look like several modes to it: the property the smooth expert is chosen
    for (its test, and research/expert_label_jumps.py). `norm`: "max" (largest component) or
    "l2"."""
    if norm not in ("max", "l2"):
        raise ValueError(f"norm must be 'max' or 'l2', not {norm!r}")
    label, tip = task.expert_action(), task.tip()
    angles = np.linspace(0.0, 2.0 * math.pi, directions, endpoint=False)
    largest = 0.0
    for a in angles:
        task.place_tip(tip + distance * np.array([math.cos(a), math.sin(a)]))
        change = task.expert_action() - label
        size = np.abs(change).max() if norm == "max" else np.linalg.norm(change)
        largest = max(largest, float(size) / float(task.action_high[0]))
    task.place_tip(tip)
    return largest
