"""sensor_msgs/Image <-> numpy: the one module that converts camera frames (through cv_bridge).

Frames are checked before conversion, so that a wrong encoding, a size that disagrees with the
data, or an absurd resolution is rejected with a reason instead of crashing the node.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from cv_bridge import CvBridge
from sensor_msgs.msg import Image

SUPPORTED_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
MAX_SIDE = 8192
_bridge = CvBridge()


class ImageRejected(ValueError):
    """A frame the policy cannot use; the message says why."""


def image_to_rgb(msg: Image) -> np.ndarray:
    """An RGB uint8 HxWx3 array from any supported 8-bit encoding."""
    channels = SUPPORTED_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise ImageRejected(
            f"unsupported encoding {msg.encoding!r}; supported: {sorted(SUPPORTED_ENCODINGS)}"
        )
    if not (0 < msg.height <= MAX_SIDE and 0 < msg.width <= MAX_SIDE):
        raise ImageRejected(f"bad size {msg.width}x{msg.height}")
    if msg.step < msg.width * channels or len(msg.data) != msg.step * msg.height:
        raise ImageRejected(
            f"data length {len(msg.data)} does not match step {msg.step} x height {msg.height}"
        )
    return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str = "camera") -> Image:
    """An rgb8 Image; fills `data` from bytes (assigning an array is ~40x slower)."""
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg
