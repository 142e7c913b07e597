"""Storage dtypes for the GLUESTICK factors.

int8 follows the authors: one symmetric scale per tensor, `q = round(t / s)` with
`s = max|t| / 127`, dequantised on the fly. Every element is then within `s / 2` of the original,
which is the bound the tests hold it to.
"""

from __future__ import annotations

import torch

FACTOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}


def check_factor_dtype(name: str) -> str:
    if name not in FACTOR_DTYPES:
        raise ValueError(f"unknown factor dtype {name!r}; use one of {sorted(FACTOR_DTYPES)}")
    return name


def quantize(t: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(stored tensor, scale). The scale is 1.0 for float dtypes, so every stored factor reads
    back the same way: `stored.float() * scale`."""
    check_factor_dtype(dtype)
    one = torch.ones((), dtype=torch.float32)
    if dtype != "int8":
        return t.to(FACTOR_DTYPES[dtype]).contiguous(), one
    peak = t.detach().abs().max() if t.numel() else torch.zeros(())
    if peak == 0:
        return torch.zeros_like(t, dtype=torch.int8), one
    scale = (peak.double() / 127.0).to(torch.float32)
    q = torch.round(t.double() / scale.double()).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale


def dequantize(stored: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if stored.dtype == torch.int8:
        return stored.to(dtype) * scale.to(dtype)
    return stored.to(dtype)


def quantization_bound(scale: torch.Tensor, dtype: str) -> float:
    """Largest elementwise error the storage dtype allows for a tensor quantised with `scale`."""
    return float(scale) / 2 if dtype == "int8" else 0.0
