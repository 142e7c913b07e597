"""The one atomic file write: a writer killed mid-write leaves the old file, an error leaves no
temporary behind, and a finished write replaces the file whole; and a shipped file that is
missing is named, whether or not a ROS environment is sourced."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from vla_pruned_ros.paths import atomic_path, atomic_write


def test_a_finished_write_replaces_the_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "sub" / "summary.json"
    atomic_write(target, "old")
    assert atomic_write(target, b"new bytes") == target
    assert target.read_bytes() == b"new bytes"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


def test_an_error_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path) -> None:
    target = tmp_path / "model.safetensors"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path) -> None:
    target = tmp_path / "demos.safetensors"
    atomic_write(target, "old")
    child = (
        "import sys, time\n"
        "from vla_pruned_ros.paths import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('partial')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
    assert target.read_text() == "old"


def test_a_file_not_shipped_is_named_with_or_without_a_ros_environment(monkeypatch) -> None:
    from vla_pruned_ros.paths import package_file

    assert package_file("config/policy_nav.yaml").is_file()
    for ament in (None, "/nonexistent_prefix"):
        if ament is None:
            monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # ament raises OSError then
        else:
            monkeypatch.setenv("AMENT_PREFIX_PATH", ament)
        with pytest.raises(FileNotFoundError, match="does not ship config/nope.yaml"):
            package_file("config/nope.yaml")
