"""Reading safetensors files with plain reads, one tensor at a time.

A memory map (what `safetensors.safe_open` uses) leaves every page it touched in the process's
resident set until the file is closed: loading or streaming a 7B model that way costs the file's
size on top of the tensors made from it. Plain reads into a buffer that is freed as soon as the
tensor is built do not. The format is the one `safetensors` documents: an 8-byte header length,
a JSON header of dtype, shape and data offsets, then the data.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Iterator
from pathlib import Path

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}  # fmt: skip


def _header(f) -> tuple[dict[str, dict], int]:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def safetensors_keys(path: Path) -> dict[str, dict]:
    """The header of a safetensors file: key -> {dtype, shape, data_offsets}."""
    with open(path, "rb") as f:
        return _header(f)[0]


def _read(f, base: int, info: dict) -> torch.Tensor:
    start, end = info["data_offsets"]
    f.seek(base + start)
    buf = bytearray(f.read(end - start))
    dtype = _DTYPES[info["dtype"]]
    t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
    return t.reshape(info["shape"])


def iter_safetensors(
    path: Path, only: Collection[str] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) one at a time in file order; `only` skips the others without reading
    them (one block of a large shard)."""
    with open(path, "rb") as f:
        header, base = _header(f)
        for key, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if only is None or key in only:
                yield key, _read(f, base, info)


class TensorFiles:
    """The tensors of several files by key, each read when asked for."""

    def __init__(self, paths: list[Path]) -> None:
        self._where: dict[str, tuple[Path, int, dict]] = {}
        for path in paths:
            with open(path, "rb") as f:
                header, base = _header(f)
            self._where.update({k: (path, base, info) for k, info in header.items()})

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def keys(self) -> set[str]:
        return set(self._where)

    def __getitem__(self, key: str) -> torch.Tensor:
        path, base, info = self._where[key]
        with open(path, "rb") as f:
            return _read(f, base, info)

    def get(self, key: str, default: torch.Tensor | None = None) -> torch.Tensor | None:
        return self[key] if key in self._where else default
