"""Calibration from a user's own data: an image folder with instructions, or a rosbag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vla_pruned_ros.compression import read_manifest
from vla_pruned_ros.training.calibration_data import (
    CalibrationDataError,
    frames_from_bag,
    frames_from_folder,
)

BAG = Path(__file__).resolve().parents[1] / "fixtures" / "bags" / "nav"


def _folder(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"),
                    rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))  # fmt: skip
    return folder


def test_image_folder_with_one_instruction_per_image_or_one_for_all(tmp_path) -> None:
    folder = _folder(tmp_path)
    (folder / "instructions.txt").write_text("go to the red marker\n")
    images, texts = frames_from_folder(folder, size=64)
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    assert texts == ["go to the red marker"] * 3
    (folder / "instructions.txt").write_text("a\nb\n")
    with pytest.raises(CalibrationDataError, match="2 lines for 3 images"):
        frames_from_folder(folder)
    (folder / "instructions.txt").unlink()
    with pytest.raises(CalibrationDataError, match="needs instructions.json or instructions.txt"):
        frames_from_folder(folder)
    (folder / "instructions.json").write_text('{"frame_000.png": "x", "frame_001.png": "y"}')
    with pytest.raises(CalibrationDataError, match="no instruction for \\['frame_002.png'\\]"):
        frames_from_folder(folder)


def test_bag_frames_follow_the_latest_instruction(tmp_path) -> None:
    images, texts = frames_from_bag(BAG, every=5, limit=10)
    assert 0 < len(images) <= 10 and images.shape[1:] == (64, 64, 3)
    assert all(t.startswith("go to") or t.startswith("drive") or t for t in texts)
    with pytest.raises(CalibrationDataError, match="has no \\['/nope'\\]"):
        frames_from_bag(BAG, camera="nope")


def test_vla_prune_calibrates_wanda_on_a_bag(tmp_path) -> None:
    out = tmp_path / "art"
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--method", "wanda", "--rank", "4",
         "--calib-bag", str(BAG), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "frames of your data" in done.stderr
    assert read_manifest(out)["method"] == "wanda"
