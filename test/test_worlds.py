"""Every Gazebo world is valid SDFormat, judged by the real parser (`ign sdf -k`), not by XML."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORLDS = sorted((ROOT / "worlds").glob("*.sdf"))
INSTALL = "apt-get install ignition-tools libsdformat12-12 libsdformat-dev (scripts/setup.sh does)"


def test_there_are_worlds() -> None:
    assert WORLDS


@pytest.mark.parametrize("world", WORLDS, ids=lambda p: p.name)
def test_world_is_valid_sdformat(world: Path) -> None:
    ign = shutil.which("ign")
    assert ign, f"`ign` (the SDFormat parser) is not installed: {INSTALL}"
    result = subprocess.run(
        [ign, "sdf", "-k", str(world)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Valid." in result.stdout, result.stdout + result.stderr


def test_the_parser_rejects_a_broken_world(tmp_path: Path) -> None:
    """The check can fail: a world with an unknown element is refused."""
    ign = shutil.which("ign")
    assert ign, f"`ign` (the SDFormat parser) is not installed: {INSTALL}"
    broken = tmp_path / "broken.sdf"
    text = WORLDS[0].read_text()
    broken.write_text(
        text.replace(
            "</world>",
            "<model name='m'><link name='l'><bogus/></link><link name='l'/></model></world>",
            1,
        )
    )
    result = subprocess.run(
        [ign, "sdf", "-k", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert "Valid." not in result.stdout, result.stdout
