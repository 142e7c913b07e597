"""Calibration frames from the user's own data, for Wanda and SparseGPT: a folder of camera
images with their instructions, or the camera and instruction topics of a rosbag. Activation
statistics from the robot's real scenes beat simulated ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


Frames = np.ndarray | list[np.ndarray]  # N x size x size x 3, or a list at native sizes


class CalibrationDataError(ValueError):
    """Calibration data that cannot be used; the message says what is wrong."""


def _fit(rgb: np.ndarray, size: int | None) -> np.ndarray:
    import cv2

    return rgb if size is None else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


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
        images.append(_fit(rgb, size))
    return _frames(images, size), texts


def frames_from_bag(
    bag: Path, camera: str = "camera/image_raw", instruction: str = "instruction",
    every: int = 1, limit: int = 512, size: int | None = 64,
) -> tuple[Frames, list[str]]:  # fmt: skip
    """Camera frames (every `every`-th, at most `limit`) with the latest instruction before
    each; frames before the first instruction are skipped."""
    from rclpy.serialization import deserialize_message

    from vla_pruned_ros.bags.play import open_reader
    from vla_pruned_ros.bags.types import rclpy_class
    from vla_pruned_ros.ros.image_io import ImageRejected, image_to_rgb

    cam, ins = (t if t.startswith("/") else f"/{t}" for t in (camera, instruction))
    reader = open_reader(Path(bag))
    try:
        conns = [c for c in reader.connections if c.topic in (cam, ins)]
        present = {c.topic for c in conns}
        missing = [t for t in (cam, ins) if t not in present]
        if missing:
            raise CalibrationDataError(
                f"{bag} has no {missing}; it has {sorted(c.topic for c in reader.connections)}"
            )
        classes = {c.id: rclpy_class(c.msgtype) for c in conns}
        images, texts, current, seen = [], [], None, 0
        for conn, _t, raw in reader.messages(conns):
            msg = deserialize_message(bytes(raw), classes[conn.id])
            if conn.topic == ins:
                current = msg.data
                continue
            if current is None:
                continue
            seen += 1
            if (seen - 1) % every:
                continue
            try:
                rgb = image_to_rgb(msg)
            except ImageRejected:
                continue
            images.append(_fit(rgb, size))
            texts.append(current)
            if len(images) >= limit:
                break
    finally:
        reader.close()
    if not images:
        raise CalibrationDataError(f"{bag}: no camera frame after an instruction")
    return _frames(images, size), texts
