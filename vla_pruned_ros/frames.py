"""Camera frames, ROS-free: the one conversion from an image message's fields to RGB, and the one
resize from a camera frame to a model's resolution.

Every consumer of frames goes through these two functions: the policy node (through
`ros/image_io`), offline bag replay and calibration (which decode bags without rclpy), and the
simulator's camera. Keeping them here, with numpy and OpenCV only, lets `evaluation/` and
`training/` read camera data without importing the ROS layer.
"""

from __future__ import annotations

import numpy as np

# 8-bit encodings a policy accepts, with their channel counts (sensor_msgs/image_encodings names).
SUPPORTED_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
MAX_SIDE = 8192  # pixels; larger frames are refused as corrupt rather than allocated


class ImageRejected(ValueError):
    """A frame the policy cannot use; the message says why."""


def decode_image(
    encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray
) -> np.ndarray:
    """An RGB uint8 HxWx3 array from the fields of a sensor_msgs/Image.

    Checked before conversion, so that a wrong encoding, a size that disagrees with the data, or
    an absurd resolution is an `ImageRejected` with a reason instead of a crash or a wrong frame.
    Row padding (`step` > width x channels) is honoured.
    """
    channels = SUPPORTED_ENCODINGS.get(encoding)
    if channels is None:
        raise ImageRejected(
            f"unsupported encoding {encoding!r}; supported: {sorted(SUPPORTED_ENCODINGS)}"
        )
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageRejected(f"bad size {width}x{height}")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buf = buf.reshape(-1)
    if step < width * channels or buf.size != step * height:
        raise ImageRejected(f"data length {buf.size} does not match step {step} x height {height}")
    pixels = buf.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding in ("rgb8", "rgba8"):
        rgb = pixels[..., :3]
    elif encoding in ("bgr8", "bgra8"):
        rgb = pixels[..., 2::-1]
    else:  # mono8
        rgb = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(rgb)


def fit_frame(rgb: np.ndarray, size: int | None) -> np.ndarray:
    """A camera frame at the model's square input resolution, by area averaging (a frame shrunk
    without aliasing, as the simulator's supersampled camera does); unchanged when it already
    has that size or `size` is None (a checkpoint whose own processor resizes)."""
    if size is None or (rgb.shape[0] == size and rgb.shape[1] == size):
        return rgb
    import cv2

    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
