"""A checkpoint's image preprocessing, per camera frame, without the processor's per-call cost.

A Hugging Face image processor called on one 640x480 frame spends most of its time outside
the arithmetic (input validation, PIL and numpy conversions of the whole frame, per-call
dataclasses): 6.7 ms on an idle core for the OpenVLA-contract fixture's 16x16 SigLIP-style
processor, of which the resize itself is 4.2 ms. For the common fixed-size processor (resize to
height x width, rescale, normalise: SigLIP, OpenVLA's Prismatic, PaliGemma) `FixedSizePixels`
does the same steps directly (`fast_pixels` builds it from the processor):

- `resize="processor"` (default): the processor's own PIL resize (same filter, same call), then
  its rescale and normalisation folded into one lookup table per channel (uint8 in, so the
  table is exact: float64 rescale then float32 normalise, as transformers computes it). Its
  output equals the processor's; `fast_pixels` checks that on probe frames at load
  (`TOLERANCE`) and declines (None: use the processor) otherwise;
- `resize="area"`: the frame brought to the processor's size by `frames.fit_frame` (area
  averaging, the one resize the embedded VLA and the simulator's camera use), a few ms
  cheaper on large frames but not the resize the checkpoint was trained with: the model sees
  slightly different pixels, so it is opt-in (the adapter option `resize`).

Processors of other shapes (shortest-edge resize + centre crop, image splitting, dynamic
resolution) are left to the processor itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

RESIZES = ("processor", "area")
TOLERANCE = 1e-5  # max |fast - processor| on normalised float32 pixels, checked at load
# Processor settings this path does not reproduce: any of them set means "use the processor".
_UNSUPPORTED = ("do_center_crop", "do_pad", "do_image_splitting", "do_resize_to_max",
                "min_pixels", "max_pixels", "do_reduce_labels")  # fmt: skip


@dataclass(frozen=True)
class FixedSizePixels:
    """uint8 HxWx3 RGB -> the processor's (1, 3, height, width) float32 pixel_values."""

    height: int
    width: int
    resample: int  # a PIL filter id (the processor's `resample`)
    table: np.ndarray  # (256, 3) float32: rescale + normalise of each byte value per channel
    resize: str = "processor"

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        if rgb.shape[:2] != (self.height, self.width):  # PIL returns a copy at the same size
            rgb = self._resize(rgb)
        pixels = self.table[rgb, np.arange(3)]  # HxWx3 float32, one lookup per value
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))[None])

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        if self.resize == "area":
            from vla_pruned_ros.frames import fit_frame

            return fit_frame(rgb, self.height)
        from PIL import Image

        size = (self.width, self.height)
        return np.asarray(Image.fromarray(rgb).resize(size, resample=self.resample))


def fast_pixels(
    image_processor: Any, resize: str = "processor"
) -> tuple[FixedSizePixels | None, str]:
    """(the fast path for `image_processor`, how it was checked), or (None, why not) when it is
    not a fixed-size resize/rescale/normalise processor or its output differs from the
    processor's on probe frames (for `resize="area"`: on a frame already at its size, where
    no resize happens, so the table is checked and only the resize differs, by choice)."""
    if resize not in RESIZES:
        raise ValueError(f"resize {resize!r} is not one of {RESIZES}")
    ip = image_processor
    size = getattr(ip, "size", None) or {}
    size = size if isinstance(size, dict) else dict(size)
    height, width = size.get("height"), size.get("width")
    set_flags = [k for k in _UNSUPPORTED if getattr(ip, k, None)]
    if set_flags or not (getattr(ip, "do_resize", False) and height and width):
        return None, f"not a fixed-size processor ({set_flags or size})"
    if resize == "area" and height != width:
        return None, f"resize 'area' needs a square input; the processor's is {width}x{height}"
    table = _byte_table(ip)
    if table is None:
        return None, "its rescale/normalise settings are not plain numbers"
    resample = int(getattr(ip, "resample", None) or 2)  # transformers' default: BILINEAR
    fast = FixedSizePixels(int(height), int(width), resample, table, resize)
    shapes = [(height, width, 3)]
    if resize == "processor":
        shapes += [(37, 53, 3), (2 * height + 3, 3 * width + 1, 3)]
    worst = 0.0
    for shape in shapes:
        probe = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        try:
            want = np.asarray(ip(probe, return_tensors="np")["pixel_values"], np.float32)
        except Exception as err:  # a processor that cannot take a bare array
            return None, f"the processor refused a probe frame ({type(err).__name__}: {err})"
        got = fast(probe).numpy()
        if want.shape != got.shape:
            return None, f"the processor returned shape {want.shape}, not {got.shape}"
        worst = max(worst, float(np.abs(want - got).max()))
    if worst > TOLERANCE:
        return None, f"differs from the processor by {worst:.2e} (> {TOLERANCE:g})"
    how = "PIL resize as the processor" if resize == "processor" else "area resize (fit_frame)"
    return fast, f"{how} to {width}x{height} + table; max |diff| {worst:.1e} on probe frames"


def _byte_table(ip: Any) -> np.ndarray | None:
    """(256, 3) float32: what the processor's rescale then normalise make of each byte value
    in each channel, computed as transformers does (float64 * scale -> float32, then
    (x - mean) / std in float32)."""
    values = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)
    x = values.astype(np.float32)
    try:
        if getattr(ip, "do_rescale", False):
            x = (values.astype(np.float64) * float(ip.rescale_factor)).astype(np.float32)
        if getattr(ip, "do_normalize", False):
            mean = np.broadcast_to(np.asarray(ip.image_mean, np.float32), (3,))
            std = np.broadcast_to(np.asarray(ip.image_std, np.float32), (3,))
            x = (x - mean) / std
    except (TypeError, ValueError, AttributeError):
        return None
    return np.ascontiguousarray(x, np.float32)
