"""Many frames through a policy at once, for offline replay where every frame is known ahead:
one forward pass per batch for the embedded VLA (its text features cached per instruction, as
`predict` does), one `predict` call per frame for any other adapter. Kept beside the adapters,
not in them, so the PolicyAdapter interface stays one method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_pruned_ros.frames import fit_frame

# glibc malloc settings for a process that runs batched forwards: keep freed blocks of up to
# 32 MiB in the heap (not one mmap each) and give the heap back only past 256 MiB free.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def reuse_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the kernel
    (glibc's `mallopt`; False, and nothing changed, on another C library).

    A batch of 32 frames makes feature maps of 1-4 MiB. With glibc's default, dynamic
    thresholds such blocks are given back when freed and faulted in again, page by page, on
    the next forward: 2,500-4,700 minor page faults per forward; 1.35 against 0.86 ms of
    CPU per frame, one idle core, batch 32 (bench/RESULTS_replay.md). Where memory comes from
    does not change a single computed bit. Process-wide and lasting; offline replay calls it
    (`evaluation/bag_replay.evaluate_bag`), a process that needs its memory back does not."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))  # fmt: skip


def supports_batch(policy: object) -> bool:
    """Whether `predict_batch` runs `policy` as one forward pass (the embedded VLA)."""
    from vla_pruned_ros.models.embedded import EmbeddedPolicy

    return type(policy) is EmbeddedPolicy


def predict_batch(policy, images: Sequence[np.ndarray], instructions: Sequence[str]) -> np.ndarray:
    """(N, action dims) float32 physical actions, row i the same as
    `policy.predict(images[i], instructions[i])` (to float rounding).

    Under `torch.inference_mode`, with the caller's thread count (replay: one, from
    `evaluation/parallel.py`). The frames go through `frames.fit_frame` (a no-op at the
    model's size) and one `np.stack` into the batch, which `torch.from_numpy` shares without a
    copy; the network's own `preprocess_images` converts the whole batch at once. Measured on
    one core: that assembly is 0.017 ms per frame against the model's ~1 ms, so the model's
    forward is what bounds replay (bench/RESULTS_replay.md)."""
    if len(images) != len(instructions):
        raise ValueError(f"{len(images)} images for {len(instructions)} instructions")
    if not supports_batch(policy):
        return np.stack([np.asarray(policy.predict(im, t), np.float32)
                         for im, t in zip(images, instructions, strict=True)])  # fmt: skip
    import torch

    with torch.inference_mode():
        size = policy.model.config.image_size
        frames = np.stack([fit_frame(im, size) for im in images])
        rows = {t: policy.text_features(t) for t in dict.fromkeys(instructions)}
        text = torch.cat([rows[t] for t in instructions])
        batch = torch.from_numpy(frames).to(text.device)
        out = policy.model.act_from_features(batch, text, policy.task).float().cpu()
        return policy.model.unnormalise(out, policy.task).numpy()
