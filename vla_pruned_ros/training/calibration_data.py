"""Calibration frames from the user's own data, for Wanda and SparseGPT: a folder of camera
images with their instructions, or the camera and instruction topics of a rosbag. Activation
statistics from the robot's real scenes beat simulated ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vla_pruned_ros import topic_names
from vla_pruned_ros.frames import fit_frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


Frames = np.ndarray | list[np.ndarray]  # N x size x size x 3, or a list at native sizes


class CalibrationDataError(ValueError):
    """Calibration data that cannot be used; the message says what is wrong."""


def _frames(images: list[np.ndarray], size: int | None) -> Frames:
    return images if size is None else np.stack(images)


def frames_from_folder(folder: Path, size: int | None = 64) -> tuple[Frames, list[str]]:
    """Images (sorted by name; resized to size x size, or as they are with None, for a
    checkpoint's own processor) and instructions from `instructions.json` ({file: text}) or
    `instructions.txt` (one line per image, or one line for all)."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationDataError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationDataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if (folder / "instructions.json").is_file():
        mapping = json.loads((folder / "instructions.json").read_text())
        missing = [f.name for f in files if f.name not in mapping]
        if missing:
            raise CalibrationDataError(
                f"{folder / 'instructions.json'} has no instruction for {missing[:3]}"
            )
        texts = [mapping[f.name] for f in files]
    elif (folder / "instructions.txt").is_file():
        lines = [ln.strip() for ln in (folder / "instructions.txt").read_text().splitlines()
                 if ln.strip()]  # fmt: skip
        if len(lines) == 1:
            lines = lines * len(files)
        if len(lines) != len(files):
            raise CalibrationDataError(
                f"{folder / 'instructions.txt'} has {len(lines)} lines for {len(files)} images "
                "(give one per image, or one for all)"
            )
        texts = lines
    else:
        raise CalibrationDataError(f"{folder} needs instructions.json or instructions.txt")
    images = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CalibrationDataError(f"{f} cannot be decoded as an image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        images.append(fit_frame(rgb, size))
    return _frames(images, size), texts


def frames_from_bag(
    bag: Path, camera: str = topic_names.CAMERA, instruction: str = topic_names.INSTRUCTION,
    every: int = 1, limit: int = 512, size: int | None = 64,
) -> tuple[Frames, list[str]]:  # fmt: skip
    """Camera frames (every `every`-th, at most `limit`) with the latest instruction before
    each; frames before the first instruction are skipped. Read through the one bag reader
    (no ROS needed); a bag cut short gives the frames before the cut."""
    from vla_pruned_ros.bags.reader import BagError, BagReader
    from vla_pruned_ros.frames import ImageRejected, decode_image

    try:
        reader = BagReader(Path(bag))
    except BagError as err:
        raise CalibrationDataError(str(err)) from None
    try:
        cam, ins = (topic_names.absolute(t) for t in (camera, instruction))
        missing = [t for t in (cam, ins) if t not in reader.topics]
        if missing:
            raise CalibrationDataError(f"{bag} has no {missing}; it has {sorted(reader.topics)}")
        images, texts, current, seen = [], [], None, 0
        try:
            for rec in reader.records([cam, ins]):
                msg = rec.message
                if rec.topic == ins:
                    current = msg.data
                    continue
                if current is None:
                    continue
                seen += 1
                if (seen - 1) % every:
                    continue
                try:
                    rgb = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
                except ImageRejected:
                    continue
                images.append(fit_frame(rgb, size))
                texts.append(current)
                if len(images) >= limit:
                    break
        except BagError as err:
            raise CalibrationDataError(str(err)) from None
    finally:
        reader.close()
    if not images:
        raise CalibrationDataError(f"{bag}: no camera frame after an instruction")
    return _frames(images, size), texts
