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
    write_text_action_fixture,
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


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(fixture folder, its compressed artifact), made once for the tests below."""
    tmp = tmp_path_factory.mktemp("own_vla")
    folder = write_openvla_contract_fixture(tmp / "openvla_contract")
    return folder, compress_fixture(folder, tmp / "art")


def test_a_compressed_artifact_runs_with_artifact_and_the_opt_in_alone(
    camera: Camera, compressed: tuple[Path, Path]
) -> None:
    folder, art = compressed
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


NAV_BAG = Path(__file__).resolve().parents[1] / "fixtures" / "bags" / "nav"
ACTION_MAP = "{action_map: {names: [linear_x, angular_z], order: [x, yaw], scale: [10, 10]}}"


def test_vla_ros_replay_runs_a_bag_through_the_compressed_artifact(
    compressed: tuple[Path, Path], tmp_path: Path
) -> None:
    """`vla-ros replay BAG --artifact ART --trust-remote-code --adapter-options ...`: the bag's
    inputs through the live policy node on the artifact (its 7-D actions mapped onto the bag's
    twist) and the safety monitor; the gate passed the policy's commands (a graph without them
    only stops: stale_command)."""
    import json
    import subprocess

    _, art = compressed
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.ros_up", "replay", str(NAV_BAG), "--task",
         "nav", "--artifact", str(art), "--trust-remote-code", "--adapter-options", ACTION_MAP,
         "--reports", str(tmp_path)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "monitor violations" in done.stdout and "action_map" not in out, out[-3000:]
    report = json.loads((tmp_path / "safety.json").read_text())
    passed = sum(e["passed_commands"] for e in report["episodes"])
    assert passed > 0, f"the gate never passed a policy command:\n{out[-3000:]}"


TEXT_RULES = [{"pattern": r"^\s*(\d+)", "action": [0.1, 0.0], "per_unit": [0.0, 0.01]}]


def _text_reference(folder: Path, instruction: str, max_new_tokens: int) -> tuple[str, list]:
    """What a user's own code gets from the checkpoint: the tokenizer, greedy `generate`, the
    decoded answer and the rule applied by hand (independent of the adapter's code)."""
    import re

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vla_pruned_ros.models.text_action import NAVILA_PROMPT

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    inputs = tokenizer(NAVILA_PROMPT.format(instruction=instruction), return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    number = float(re.search(TEXT_RULES[0]["pattern"], text).group(1))
    return text, [0.1, 0.01 * number]


def test_a_text_action_checkpoint_answers_through_the_node(camera: Camera, tmp_path: Path) -> None:
    """`adapter:=text` on a tiny Llama that answers in numbers (test/checkpoint_fixtures.py):
    generate, parse with the configured rule, publish VLAAction; equal to the checkpoint's own
    greedy answer parsed by hand."""
    import json

    folder = write_text_action_fixture(tmp_path / "text_llama")
    options = json.dumps({"rules": TEXT_RULES, "max_new_tokens": 4})
    proc = _start_policy(folder, "adapter:=text", f"adapter_options:='{options}'")
    try:
        msg = _actions_for(camera, proc)[-1]
    finally:
        _stop(proc)
    text, want = _text_reference(folder, INSTRUCTION, 4)
    assert tuple(msg.names) == ("linear_x", "angular_z"), msg.names
    np.testing.assert_allclose(np.asarray(msg.action), want, rtol=0, atol=1e-6, err_msg=text)
