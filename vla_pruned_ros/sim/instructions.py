"""Instruction templates and the generalisation split.

Training phrasings and held-out phrasings are disjoint template sets; scenes with a seed at or
above HELD_OUT_SEED_START are never used for training data. Both rules live only here.
"""

from __future__ import annotations

import numpy as np

HELD_OUT_SEED_START = 1_000_000
COLOURS = ("red", "green", "blue", "yellow")
RGBA = {
    "red": "0.9 0.1 0.1 1",
    "green": "0.1 0.75 0.1 1",
    "blue": "0.1 0.25 0.95 1",
    "yellow": "0.95 0.85 0.1 1",
}

NAV_TEMPLATES = {
    "train": (
        "go to the {c} marker",
        "drive to the {c} one",
        "navigate to the {c} marker",
        "move to the {c} post",
        "head for the {c} marker",
        "go to {c}",
        "please drive over to the {c} marker",
        "reach the {c} marker",
        "find the {c} marker and stop there",
        "take me to the {c} post",
        "the {c} marker is your goal",
        "drive up to the {c} pole",
        "get to the {c} marker",
        "your target is the {c} one",
    ),
    "heldout": (
        "could you roll over to the {c} beacon",
        "make your way toward the {c} pillar",
        "travel until you are next to the {c} marker",
        "approach the {c} cylinder",
        "proceed to the {c} landmark",
    ),
}

MANIP_TEMPLATES = {
    "train": (
        "push the {c} block onto the target",
        "move the {c} cube to the target",
        "slide the {c} block to the goal",
        "put the {c} block on the target",
        "push the {c} cube onto the marked spot",
        "get the {c} block onto the target",
        "shove the {c} box to the target",
        "the {c} block goes on the target",
        "bring the {c} cube to the goal area",
        "place the {c} block on the target zone",
        "nudge the {c} cube onto the target",
        "push {c} to the target",
        "move {c} onto the goal",
        "slide the {c} cube onto the target",
    ),
    "heldout": (
        "relocate the {c} brick onto the goal region",
        "transport the {c} block over to the target",
        "drive the {c} cube until it sits on the target",
        "deliver the {c} box to the marked area",
        "get that {c} piece onto the target",
    ),
}


def instruction(templates: dict[str, tuple[str, ...]], colour: str, rng: np.random.Generator,
                phrasing: str = "train") -> str:  # fmt: skip
    """A phrasing from the `train` or `heldout` template set naming `colour`."""
    if phrasing not in templates:
        raise ValueError(f"phrasing must be one of {sorted(templates)}, not {phrasing!r}")
    options = templates[phrasing]
    return options[int(rng.integers(len(options)))].format(c=colour)
