"""vla-prune and vla-inspect on the shipped embedded VLA, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from vla_pruned_ros.models.registry import load_policy


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_prune_inspect_and_deploy_an_artifact(tmp_path) -> None:
    out = tmp_path / "wanda24_r8"
    done = _run(
        "vla_pruned_ros.cli.prune",
        "--method",
        "wanda",
        "--pattern",
        "2:4",
        "--rank",
        "8",
        "--factor-dtype",
        "int8",
        "--calib-scenes",
        "1",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "ratio to dense fp16" in done.stdout and "calibration" in done.stderr
    again = _run("vla_pruned_ros.cli.prune", "--rank", "8", "-o", str(out))
    assert again.returncode == 2 and "exists and is not empty" in again.stderr

    shown = _run(
        "vla_pruned_ros.cli.inspect_artifact",
        str(out),
        "--plot",
        str(tmp_path / "spectra.png"),
        "--json",
        str(tmp_path / "inspect.json"),
    )
    assert shown.returncode == 0, shown.stderr
    assert "checksums OK" in shown.stdout and "text.encoder.layer.0.attention.self.query" in (
        shown.stdout
    )
    assert (tmp_path / "spectra.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "inspect.json").read_text())
    assert summary["manifest"]["method"] == "wanda"
    assert 0 < summary["ratio_to_dense_fp16"] < 1
    assert all(row["rank"] == min(8, row["full_rank"]) for row in summary["layers"])

    dense = load_policy("embedded", "nav")
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    actions = {}
    for mode in ("materialize", "packed"):
        policy = load_policy(str(out), "nav", mode=mode)
        assert policy.info.variant == "gluestick" and policy.info.rank == 8
        actions[mode] = policy.predict(frame, "go to the red marker")
    np.testing.assert_array_equal(actions["materialize"], actions["packed"])
    assert np.all(np.abs(actions["packed"]) <= np.asarray(dense.info.action_high) + 1e-6)

    (out / "pruned.safetensors").write_bytes(b"broken")
    bad = _run("vla_pruned_ros.cli.inspect_artifact", str(out))
    assert bad.returncode == 2 and "pruned.safetensors is corrupt" in bad.stderr
