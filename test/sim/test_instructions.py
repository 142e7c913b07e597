"""Instruction templates and the generalisation split."""

from __future__ import annotations

import numpy as np
import pytest

from vla_pruned_ros.sim import TASKS
from vla_pruned_ros.sim import instructions as lang


@pytest.mark.parametrize("task", TASKS)
def test_template_sets_are_large_and_disjoint(task: str) -> None:
    templates = lang.TEMPLATES[task]
    assert len(set(templates["train"])) >= 12 and len(set(templates["heldout"])) >= 4
    assert not set(templates["train"]) & set(templates["heldout"])
    for split in lang.PHRASINGS:
        for t in templates[split]:
            assert lang.template_split(t, templates) == split
    with pytest.raises(ValueError):
        lang.template_split("go somewhere {c}", templates)


@pytest.mark.parametrize("task", TASKS)
def test_every_instruction_names_exactly_its_colour(task: str) -> None:
    templates = lang.TEMPLATES[task]
    for split in lang.PHRASINGS:
        for t in templates[split]:
            for colour in lang.COLOURS:
                text = t.format(c=colour)
                assert lang.named_colour(text) == colour
                assert lang.phrasing_of(text, templates) == split


def test_sampling_is_deterministic_in_the_seed() -> None:
    def draw(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [lang.instruction(lang.NAV_TEMPLATES, "red", rng) for _ in range(10)]

    assert draw(3) == draw(3) and draw(3) != draw(4)
    with pytest.raises(ValueError):
        lang.instruction(lang.NAV_TEMPLATES, "red", np.random.default_rng(0), "test")


def test_held_out_seed_rule() -> None:
    assert lang.seed_split(lang.HELD_OUT_SEED_START - 1) == "train"
    assert lang.seed_split(lang.HELD_OUT_SEED_START) == "heldout"
    assert lang.episode_split(0, "train") == "train"
    assert lang.episode_split(lang.HELD_OUT_SEED_START, "heldout") == (
        "heldout_scene+heldout_phrasing"
    )
    assert lang.episode_split(5, None) == "train+free_text"


def test_free_text_is_not_a_template() -> None:
    assert lang.phrasing_of("please go to the red marker now", lang.NAV_TEMPLATES) is None
    assert lang.named_colour("red or blue?") is None
