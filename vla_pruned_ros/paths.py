"""Where the package's shipped files (config/, launch/, worlds/) are: the source tree when run
from a checkout or an editable install, the ament share folder when installed by colcon."""

from __future__ import annotations

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
    except (ImportError, LookupError):
        pass
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"vla_pruned_ros does not ship {relative}")
