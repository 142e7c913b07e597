"""A user's own VLA from its folder to VLAAction over DDS with configuration only: the
OpenVLA-contract fixture (test/checkpoint_fixtures.py; not OpenVLA) in a real policy node
process, named with `adapter:=openvla` and opted in with `trust_remote_code:=true`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from std_msgs.msg import String

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoint_fixtures import (  # noqa: E402
    OPENVLA_FIXTURE_ACTIONS,
    openvla_contract_dense_action,
    write_openvla_contract_fixture,
)
from test_policy_node import Camera, _start_policy, _stop  # noqa: E402

from vla_pruned_ros.ros.conversions import sec_to_stamp  # noqa: E402
from vla_pruned_ros.ros.image_io import rgb_to_image  # noqa: E402

FRAME = np.random.default_rng(7).integers(0, 256, (24, 32, 3), dtype=np.uint8)
INSTRUCTION = "pick up the red block"


@pytest.fixture
def camera():
    cam = Camera()
    yield cam
    cam.close()


def _actions_for(camera: Camera, proc, timeout: float = 120.0) -> list:
    camera.instr_pub.publish(String(data=INSTRUCTION))
    deadline = time.monotonic() + timeout
    while not camera.actions and time.monotonic() < deadline and proc.poll() is None:
        camera.stream(0.2, make=lambda: rgb_to_image(FRAME, sec_to_stamp(camera.now())))
    assert camera.actions, f"the policy node never acted (exit code {proc.poll()})"
    return camera.actions


def test_a_dense_openvla_contract_checkpoint_runs_from_its_folder(
    camera: Camera, tmp_path: Path
) -> None:
    folder = write_openvla_contract_fixture(tmp_path / "openvla_contract")
    proc = _start_policy(folder, "adapter:=openvla", "trust_remote_code:=true")
    try:
        msg = _actions_for(camera, proc)[-1]
    finally:
        _stop(proc)
    assert tuple(msg.names) == OPENVLA_FIXTURE_ACTIONS
    want = openvla_contract_dense_action(folder, FRAME, INSTRUCTION)
    np.testing.assert_allclose(np.asarray(msg.action), want, rtol=0, atol=1e-6)


def test_a_remote_code_checkpoint_does_not_load_without_the_opt_in(
    camera: Camera, tmp_path: Path
) -> None:
    folder = write_openvla_contract_fixture(tmp_path / "openvla_contract")
    log = tmp_path / "node.log"
    with log.open("w") as out:
        proc = _start_policy(folder, "adapter:=openvla", log=out)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                _stop(proc)
    text = log.read_text()
    assert proc.returncode != 0 and "trust_remote_code:=true" in text, text[-2000:]


def compress_fixture(folder: Path, out: Path) -> Path:
    """`vla-prune` as a user runs it on their folder: 2:4 magnitude + GLUESTICK at full rank
    (32: the fixture's hidden size), float32 factors."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model", str(folder),
         "--trust-remote-code", "--rank", "32", "--factor-dtype", "float32",
         "--output", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_compressed_artifact_runs_with_artifact_and_the_opt_in_alone(
    camera: Camera, tmp_path: Path
) -> None:
    folder = write_openvla_contract_fixture(tmp_path / "openvla_contract")
    art = compress_fixture(folder, tmp_path / "art")
    # no adapter, no unnorm_key: the artifact's manifest names them
    proc = _start_policy(art, "trust_remote_code:=true")
    try:
        msg = _actions_for(camera, proc)[-1]
    finally:
        _stop(proc)
    assert tuple(msg.names) == OPENVLA_FIXTURE_ACTIONS
    assert msg.variant == "gluestick"
    want = openvla_contract_dense_action(folder, FRAME, INSTRUCTION)
    np.testing.assert_allclose(np.asarray(msg.action), want, rtol=0, atol=1e-6)
