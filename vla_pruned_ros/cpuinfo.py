"""The one reader of /proc/cpuinfo: what the sparse kernel's build flags and a results file's
machine record both ask of it."""

from __future__ import annotations

from pathlib import Path


def cpuinfo_field(name: str) -> str | None:
    """The first processor's `name` line of /proc/cpuinfo ('flags', 'model name'), or None where
    there is no such file or line (not Linux, some containers)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None
