"""The manipulation table's dimensions and the push line: the geometry the scene, its scene
state and the scripted experts share (numpy only)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

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


class PushLine(NamedTuple):
    """The named block, the point behind it on the line to the target, that line's direction,
    the block's distance to the target, and the pusher's position relative to the line: how far
    behind the block along it, and how far to the side."""

    block: np.ndarray
    behind: np.ndarray
    direction: np.ndarray
    remaining: float
    along: float
    lateral: float


def push_line(block: np.ndarray, target: np.ndarray, tip: np.ndarray) -> PushLine:
    """The push line of a block toward a target, seen from the pusher's tip."""
    to_target = target - block
    remaining = float(np.linalg.norm(to_target))
    d = to_target / max(remaining, 1e-6)
    rel = tip - block
    along = float(np.dot(rel, -d))
    lateral = float(rel[0] * d[1] - rel[1] * d[0])
    return PushLine(block, block - d * (HALF_BLOCK + TIP_R + 0.012), d, remaining, along, lateral)
