"""sensor_msgs/Image <-> numpy for the nodes: thin wrappers over `vla_pruned_ros.frames`, where
the one conversion (and its checks) lives ROS-free, so bag replay decodes frames the same way."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from vla_pruned_ros.frames import SUPPORTED_ENCODINGS, ImageRejected, decode_image

__all__ = ["SUPPORTED_ENCODINGS", "ImageRejected", "image_to_rgb", "rgb_to_image"]


def image_to_rgb(msg: Image) -> np.ndarray:
    """An RGB uint8 HxWx3 array from any supported 8-bit encoding (`frames.decode_image`)."""
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str = "camera") -> Image:
    """An rgb8 Image; fills `data` from bytes (assigning an array is ~40x slower)."""
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg
