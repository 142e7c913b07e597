"""Instruction templates and the generalisation split.

Training phrasings and held-out phrasings are disjoint template sets; scenes with a seed at or
above HELD_OUT_SEED_START are never used for training data, nor for tuning (that uses
calibration scenes from CALIBRATION_SEED_START). The rules live only here.
"""

from __future__ import annotations

import re

import numpy as np

HELD_OUT_SEED_START = 1_000_000
# Scenes for tuning inference-time settings (the action gain): from the training split's
# distribution, but above any seed `vla-train` or the DAgger probe collects from.
CALIBRATION_SEED_START = 500_000
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


TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {"nav": NAV_TEMPLATES, "manip": MANIP_TEMPLATES}
PHRASINGS = ("train", "heldout")


def instruction(templates: dict[str, tuple[str, ...]], colour: str, rng: np.random.Generator,
                phrasing: str = "train") -> str:  # fmt: skip
    """A phrasing from the `train` or `heldout` template set naming `colour`."""
    if phrasing not in templates:
        raise ValueError(f"phrasing must be one of {sorted(templates)}, not {phrasing!r}")
    options = templates[phrasing]
    return options[int(rng.integers(len(options)))].format(c=colour)


def seed_split(seed: int) -> str:
    """Whether a scene seed may feed training ("train") or is kept for evaluation ("heldout")."""
    return "heldout" if seed >= HELD_OUT_SEED_START else "train"


def template_split(template: str, templates: dict[str, tuple[str, ...]]) -> str:
    """The set ("train" or "heldout") a template belongs to; unknown templates are an error, so
    a typo cannot silently move a phrasing across the split."""
    for split, options in templates.items():
        if template in options:
            return split
    raise ValueError(f"unknown template {template!r}")


def phrasing_of(text: str, templates: dict[str, tuple[str, ...]]) -> str | None:
    """The template set an instruction was drawn from, or None for free text (a user's own)."""
    for split, options in templates.items():
        if any(t.format(c=c) == text for t in options for c in COLOURS):
            return split
    return None


def named_colour(text: str) -> str | None:
    """The single colour word an instruction names (None if it names none or several)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    named = [c for c in COLOURS if c in words]
    return named[0] if len(named) == 1 else None


def episode_split(seed: int, phrasing: str | None) -> str:
    """The label evaluation groups episodes by: held-out scenes and held-out phrasings are
    reported separately so each kind of generalisation can be read on its own."""
    label = "heldout_scene" if seed_split(seed) == "heldout" else "train"
    if phrasing == "heldout":
        label += "+heldout_phrasing"
    elif phrasing is None:
        label += "+free_text"
    return label
