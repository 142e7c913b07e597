"""scripts/setup.sh refuses to start on a machine that lacks what it needs, and says what."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"
# The real interpreter behind the venv (a pyenv shim would need pyenv on PATH).
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3.11"


def _run(tmp_path: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {"PATH": path, "HOME": str(tmp_path), "VLA_VENV": str(tmp_path / "venv"), **env}
    return subprocess.run(
        ["bash", str(SETUP)], env=full_env, capture_output=True, text=True, timeout=60
    )


def _bin_with(tmp_path: Path, tools: list[str]) -> str:
    """A PATH holding only the named tools, to simulate a machine missing the others."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    return str(bindir)


BASIC = ["bash", "cat", "sha256sum", "cut", "dirname", "mkdir", "df", "awk", "nproc", "grep"]


def _assert_clean_failure(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode != 0
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_python_is_named(tmp_path: Path) -> None:
    result = _run(tmp_path, _bin_with(tmp_path, BASIC), PYTHON="python3.11-missing")
    _assert_clean_failure(result, "python3.11-missing not found")


def test_missing_cmake_is_named(tmp_path: Path) -> None:
    python = str(BASE_PYTHON)
    path = _bin_with(tmp_path, BASIC)
    result = _run(tmp_path, path, PYTHON=python)
    _assert_clean_failure(result, "cmake not found")


def test_too_little_disk_is_named(tmp_path: Path) -> None:
    python = str(BASE_PYTHON)
    path = _bin_with(tmp_path, [*BASIC, "cmake", "c++"])
    result = _run(tmp_path, path, PYTHON=python, VLA_SETUP_MIN_FREE_MB=str(10**12))
    _assert_clean_failure(result, "MB free")
    assert not (tmp_path / "venv" / "bin").exists(), "nothing is installed when refusing"
