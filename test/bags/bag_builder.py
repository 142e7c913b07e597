"""Small real bags for the bag tests, written by our writer (`bags/writer.py`, MCAP with chunk
CRCs, or sqlite3) or by rosbags' own writer (MCAP with CRC 0), messages serialized with the
typestore that also knows our messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from vla_pruned_ros.bags.types import typestore
from vla_pruned_ros.bags.writer import CHUNK_BYTES, open_writer

CAMERA, INSTRUCTION, ACTION = "/camera/image_raw", "/instruction", "/vla/action"
SIDE = 64


def _time(stamp: float):
    t = typestore().types["builtin_interfaces/msg/Time"]
    ns = round(stamp * 1e9)
    return t(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image(stamp: float, value: int = 100) -> bytes:
    store = typestore()
    header = store.types["std_msgs/msg/Header"](stamp=_time(stamp), frame_id="camera")
    msg = store.types["sensor_msgs/msg/Image"](
        header=header, height=SIDE, width=SIDE, encoding="rgb8", is_bigendian=0, step=3 * SIDE,
        data=np.full(SIDE * SIDE * 3, value, np.uint8),
    )  # fmt: skip
    return store.serialize_cdr(msg, "sensor_msgs/msg/Image")


def action(stamp: float) -> bytes:
    store = typestore()
    header = store.types["std_msgs/msg/Header"](stamp=_time(stamp), frame_id="")
    msg = store.types["vla_pruned_ros_msgs/msg/VLAAction"](
        header=header, action=np.array([0.1, 0.0], np.float32), names=["linear_x", "angular_z"],
        action_space="base_velocity", instruction="", variant="dense", rank=-1,
        model_id="embedded", latency_ms=1.0,
    )  # fmt: skip
    return typestore().serialize_cdr(msg, "vla_pruned_ros_msgs/msg/VLAAction")


def text(data: str) -> bytes:
    store = typestore()
    return store.serialize_cdr(store.types["std_msgs/msg/String"](data=data), "std_msgs/msg/String")


def write_bag(
    path: Path, frames: list[float], *, writer: str = "ours", storage: str = "mcap",
    compression: str = "", with_action: bool = True, camera_type: str = "sensor_msgs/msg/Image",
    chunk_bytes: int = CHUNK_BYTES,
) -> Path:  # fmt: skip
    """An instruction, then per stamp a camera frame and the action computed from it, logged in
    list order (so stamps out of order in the list are out of order in the file)."""
    store = typestore()
    if writer == "ours":
        bag = open_writer(path, storage, chunk_compression=compression, chunk_bytes=chunk_bytes)
    else:
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
        bag = Writer(path, version=9, storage_plugin=plugin)
        bag.open()
    if camera_type == "sensor_msgs/msg/Image":
        cam = bag.add_connection(CAMERA, camera_type, typestore=store)
    else:
        cam = bag.add_connection(CAMERA, camera_type, msgdef="int32 x",
                                 rihs01="RIHS01_" + "0" * 64)  # fmt: skip
    instr = bag.add_connection(INSTRUCTION, "std_msgs/msg/String", typestore=store)
    act = (bag.add_connection(ACTION, "vla_pruned_ros_msgs/msg/VLAAction", typestore=store)
           if with_action else None)  # fmt: skip
    bag.write(instr, 1, text("go to the red marker"))
    for i, stamp in enumerate(frames):
        log = 10 + 10 * i
        bag.write(cam, log, image(stamp, value=(40 + 7 * i) % 256))
        if act is not None:
            bag.write(act, log + 1, action(stamp))
    bag.close()
    return path
