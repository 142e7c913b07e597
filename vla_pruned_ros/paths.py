"""Where the package's shipped files (config/, launch/, worlds/) are: the source tree when run
from a checkout or an editable install, the ament share folder when installed by colcon; and the
one way the package writes a file atomically (`atomic_write`, `atomic_path`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_file(relative: str) -> Path:
    """Path of a shipped file such as "config/policy_nav.yaml"; FileNotFoundError if absent."""
    candidate = SOURCE_ROOT / relative
    if candidate.exists():
        return candidate
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("vla_pruned_ros")) / relative
    except (ImportError, LookupError, OSError):  # OSError: no ROS environment sourced
        pass
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"vla_pruned_ros does not ship {relative}")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (safetensors, an
    image library); when the block ends it is flushed to disk and renamed over `path` in one
    step, or removed if the block raised. So a SIGINT, SIGTERM or crash mid-write leaves the
    old file or none, never a truncated one that a cache or a resume would then trust."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users' processes
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically (see `atomic_path`); returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
