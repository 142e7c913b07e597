"""Reading safetensors files with plain reads, one tensor at a time.

A memory map (what `safetensors.safe_open` uses) leaves every page it touched in the process's
resident set until the file is closed: loading or streaming a 7B model that way costs the file's
size on top of the tensors made from it. Plain reads into a buffer that is freed as soon as the
tensor is built do not. The format is the one `safetensors` documents: an 8-byte header length,
a JSON header of dtype, shape and data offsets, then the data.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}  # fmt: skip


class SafetensorsError(ValueError):
    """A safetensors file whose header does not describe its data (wrong dtype, shape or
    offsets, a key in two files); the message names the file and the tensor."""


def _header(f) -> tuple[dict[str, dict], int]:
    """The header of an open file, each entry checked against the file's size so that a
    tensor read later cannot come back with other bytes or another shape than declared."""
    name = getattr(f, "name", "<file>")
    raw = f.read(8)
    if len(raw) != 8:
        raise SafetensorsError(f"{name}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw)
    size = os.fstat(f.fileno()).st_size
    if n > size - 8:
        raise SafetensorsError(f"{name}: header length {n} exceeds the file's {size} bytes")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SafetensorsError(f"{name}: header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name}: header is not a JSON object")
    header.pop("__metadata__", None)
    data = size - 8 - n
    for key, info in header.items():
        _check_entry(name, key, info, data)
    return header, 8 + n


def _check_entry(name: str, key: str, info: Any, data: int) -> None:
    """One header entry: a known dtype, a shape of non-negative ints, offsets inside the data
    block whose length is the shape's element count times the dtype's size."""
    if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
        raise SafetensorsError(f"{name}: tensor {key!r} has an unknown dtype")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsError(f"{name}: tensor {key!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data
    ):
        raise SafetensorsError(f"{name}: tensor {key!r} has offsets {offsets!r} outside the data")
    itemsize = torch.empty(0, dtype=_DTYPES[info["dtype"]]).element_size()
    if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        raise SafetensorsError(
            f"{name}: tensor {key!r} declares shape {shape} ({info['dtype']}) but holds "
            f"{offsets[1] - offsets[0]} bytes"
        )


def safetensors_keys(path: Path) -> dict[str, dict]:
    """The header of a safetensors file: key -> {dtype, shape, data_offsets}."""
    with open(path, "rb") as f:
        return _header(f)[0]


def _read(f, base: int, info: dict) -> torch.Tensor:
    start, end = info["data_offsets"]
    f.seek(base + start)
    buf = bytearray(end - start)  # read straight into the tensor's storage: no second copy
    if f.readinto(buf) != len(buf):
        raise SafetensorsError(f"{getattr(f, 'name', '<file>')}: tensor data ends early")
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
    """The tensors of several files by key, each read when asked for. A key stored in two files
    is an error, never "the later file wins": no file can override another's tensor."""

    def __init__(self, paths: list[Path]) -> None:
        self._where: dict[str, tuple[Path, int, dict]] = {}
        for path in paths:
            with open(path, "rb") as f:
                header, base = _header(f)
            for key, info in header.items():
                if key in self._where:
                    raise SafetensorsError(
                        f"tensor {key!r} is stored in both {self._where[key][0].name} and "
                        f"{path.name}"
                    )
                self._where[key] = (path, base, info)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def keys(self) -> set[str]:
        return set(self._where)

    def info(self, key: str) -> dict:
        """The header entry of `key` (dtype, shape, data_offsets), its data not read."""
        return self._where[key][2]

    def __getitem__(self, key: str) -> torch.Tensor:
        path, base, info = self._where[key]
        with open(path, "rb") as f:
            return _read(f, base, info)

    def get(self, key: str, default: torch.Tensor | None = None) -> torch.Tensor | None:
        return self[key] if key in self._where else default
