"""A model that raises while it loads (its own code, not an OSError or ValueError) fails the
policy node's configure with the exception and its traceback in the log, so "configure failed
(see the log above)" always has something above it (issue 19)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ADAPTER = '''
class Broken:
    """A user's adapter whose model code raises while loading."""

    def __init__(self, artifact, task, **options):
        raise RuntimeError("checkpoint shard 3 is truncated")
'''


def test_a_model_raising_at_load_is_logged_with_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken_adapter.py").write_text(ADAPTER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.ros.policy_node", "--ros-args",
         "--params-file", str(ROOT / "config" / "policy_nav.yaml"),
         "-p", f"artifact:={tmp_path}", "-p", "adapter:=broken_adapter:Broken"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert "cannot load policy (RuntimeError: checkpoint shard 3 is truncated)" in out, out[-3000:]
    assert "Traceback" in out and "broken_adapter.py" in out, out[-3000:]
    assert out.index("cannot load policy") < out.index("configure failed"), out[-3000:]
