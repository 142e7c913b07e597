"""Instruction features kept on disk between runs, so that offline replay of a bag whose
instructions were seen before never loads MiniLM: a bag holds a few distinct instructions, and
the text encoder's output for one is a 384-float row.

Why reading an entry back is safe, i.e. gives exactly the row the encoder would compute now:
an entry holds the encoder's output bytes, stored under a key that names everything those bytes
depend on: the model's own weights (`identity`: sha256 of a saved model's weights and config,
or of an artifact's manifest, which holds every file's checksum, plus its layers' runtime
modes), the MiniLM package that provides the frozen word-embedding table and the tokenizer, and
the tokenizer and encoder code (`embedded_config.minilm_identity`), the dtype and device, torch's
version, its CPU kernel capability and its thread count (the order of a reduction changes the
float rounding), and the text itself. The invalidation rule is the key: change any of these
and the entry is simply not found (it is recomputed and stored under the new key); old entries
are never read again and can be deleted at any time (`rm -r` the folder). Each entry also
carries its full key, compared on read, so a corrupt, truncated or colliding file is
recomputed, never trusted. Entries are written atomically (`paths.atomic_write`).

Where: `$VLA_INSTRUCTION_CACHE` (a folder; `off` turns the cache off), else
`$XDG_CACHE_HOME/vla_pruned_ros/instructions` (`~/.cache/...`). Only offline replay opts in
(`evaluation/bag_replay.py`); a live policy node computes its features in memory as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "vla_pruned_ros.instruction_features/1"
ENV = "VLA_INSTRUCTION_CACHE"


def default_folder() -> Path | None:
    """The cache folder from the environment (see the module docstring); None when off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vla_pruned_ros" / "instructions"


class InstructionCache:
    """Text features on disk, keyed by the encoder's identity and the text."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.hits = self.misses = 0

    @classmethod
    def from_environment(cls) -> InstructionCache:
        return cls(default_folder())

    def key(self, identity: dict[str, Any], text: str, dtype: torch.dtype,
            device: torch.device | str) -> dict[str, Any]:  # fmt: skip
        """Everything the encoder's output bytes for `text` depend on (module docstring)."""
        return {
            "format": FORMAT,
            "encoder": identity,
            "dtype": str(dtype),
            "device": torch.device(device).type,
            "torch": torch.__version__,
            "cpu": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "text": text,
        }

    def _path(self, key: dict[str, Any]) -> Path:
        assert self.folder is not None
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / name[:2] / f"{name}.feat"

    def get(self, key: dict[str, Any]) -> torch.Tensor | None:
        """The stored features for `key`, or None (absent, unreadable, or another key)."""
        if self.folder is None:
            return None
        try:
            data = self._path(key).read_bytes()
            header, _, body = data.partition(b"\n")
            meta = json.loads(header)
            if meta.get("key") != json.loads(json.dumps(key)):
                raise ValueError("another key")
            array = np.frombuffer(body, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
        except (OSError, ValueError, KeyError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        return torch.from_numpy(array.copy())

    def put(self, key: dict[str, Any], features: torch.Tensor) -> None:
        """Store `features` under `key`; a cache that cannot be written is skipped silently
        (replay still works, it only starts slower next time)."""
        if self.folder is None:
            return
        from vla_pruned_ros.paths import atomic_write

        array = features.detach().cpu().contiguous().numpy()
        header = json.dumps({"key": key, "dtype": array.dtype.str, "shape": list(array.shape)})
        try:
            atomic_write(self._path(key), header.encode() + b"\n" + array.tobytes())
        except OSError:
            pass
