"""A user's whole path, across real processes, with configuration only: a checkpoint folder
(the OpenVLA-contract fixture of test/checkpoint_fixtures.py; not OpenVLA) -> `vla-prune
--model DIR` -> an artifact -> `vla-ros up` on a bringup YAML beside it that names only the
artifact, the adapter and its options, with paths relative to the YAML's own folder -> the
policy node and the safety monitor over DDS -> a gated command on cmd_vel equal to the
expected mapped action -> a contact stops it at the gate while the policy keeps acting (its
/diagnostics say how the model runs, what it holds and in which dtype) -> Ctrl-C (SIGINT) ->
a clean exit with the monitor's report written. Run for the fp32 default and for the bf16 recipe
(`--weight-dtype bfloat16 --adapter-option dtype=bfloat16`), which takes the kernel's AMX
tiles where the CPU has them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import Twist
from std_msgs.msg import String
from vla_pruned_ros_msgs.msg import Contacts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoint_fixtures import (  # noqa: E402
    openvla_contract_dense_action,
    write_openvla_contract_fixture,
)
from test_policy_node import Camera  # noqa: E402

from vla_pruned_ros.compression.kernels import kernel  # noqa: E402
from vla_pruned_ros.ros import topics  # noqa: E402
from vla_pruned_ros.ros.conversions import sec_to_stamp  # noqa: E402
from vla_pruned_ros.ros.image_io import rgb_to_image  # noqa: E402

BIN = Path(sys.executable).parent  # the console scripts a user runs
FRAME = np.random.default_rng(11).integers(0, 256, (24, 32, 3), dtype=np.uint8)
INSTRUCTION = "go to the red block"
SCALE = 5.0  # x, yaw (about +-0.03) -> linear_x, angular_z (about +-0.15)
HOLD_S = 2.0


def _write_robot_folder(robot: Path, reports: Path) -> Path:
    """The user's deployment folder: a bringup YAML and a safety parameter file beside it."""
    robot.mkdir(parents=True, exist_ok=True)
    safety = {"safety_monitor": {"ros__parameters": {
        "report_dir": str(reports),
        "zones": {"direction_aware": False},  # a contact stops every command for stop_hold_s
        "limits": {"command_timeout_s": 2.0, "camera_timeout_s": 2.0, "policy_timeout_s": 3.0,
                   "stop_hold_s": HOLD_S, "max_linear_speed": 1.0},
    }}}  # fmt: skip
    (robot / "safety.yaml").write_text(yaml.safe_dump(safety))
    action_map = {"names": ["linear_x", "angular_z"], "order": ["x", "yaw"],
                  "scale": [SCALE, SCALE]}  # fmt: skip
    bringup = {"nodes": [
        {"executable": "safety_monitor_node", "params": ["safety.yaml"]},
        {"executable": "policy_node", "overrides": {
            "artifact": "art", "adapter": "openvla", "trust_remote_code": True,
            "adapter_options": {"action_map": action_map}}},
    ]}  # fmt: skip
    path = robot / "bringup.yaml"
    path.write_text(yaml.safe_dump(bringup))
    return path


@pytest.fixture
def camera():
    cam = Camera()
    yield cam
    cam.close()


# fp32 (the default) and the bf16 recipe for a CPU with AMX (bf16 values, the model run in bf16
# from the artifact's own adapter options: nothing in the bringup YAML says bf16)
RECIPES = {"fp32": [], "bf16": ["--weight-dtype", "bfloat16", "--adapter-option", "dtype=bfloat16"]}


def _expected_action(recipe: str, folder: Path, artifact: Path) -> np.ndarray:
    """What the node must publish: fp32, the dense model's action (pruning with factors kept in
    fp32 at this rank leaves it unchanged); bf16, the same artifact's action loaded in this
    process the way the node loads it (bf16 rounding may move an action bin off the dense one)."""
    if recipe == "fp32":
        dense = openvla_contract_dense_action(folder, FRAME, INSTRUCTION)
    else:
        from vla_pruned_ros.models.registry import load_policy

        dense = load_policy(str(artifact), "nav", trust_remote_code=True).predict(
            FRAME, INSTRUCTION
        )
    return np.asarray([dense[0], dense[5]]) * SCALE  # order [x, yaw]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_checkpoint_folder_to_a_gated_command_and_a_clean_exit(
    camera: Camera, tmp_path: Path, recipe: str
) -> None:
    user, robot, reports = tmp_path / "user", tmp_path / "robot", tmp_path / "reports"
    folder = write_openvla_contract_fixture(user / "my_vla")
    # --output relative to the user's folder, as a user types it
    pruned = subprocess.run(
        [str(BIN / "vla-prune"), "--model", "my_vla", "--trust-remote-code", "--rank", "32",
         "--factor-dtype", "float32", "--output", "../robot/art", *RECIPES[recipe]],
        cwd=user, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    bringup = _write_robot_folder(robot, reports)
    want = _expected_action(recipe, folder, robot / "art")

    cmds: list[tuple[float, float]] = []  # (receipt time, gated linear.x)
    camera.node.create_subscription(
        Twist, topics.CMD, lambda m: cmds.append((time.monotonic(), m.linear.x)), 50
    )
    contacts = camera.node.create_publisher(Contacts, topics.CONTACTS, topics.EVIDENCE_DEPTH)
    # started from another folder: `art` and `safety.yaml` resolve against the YAML's folder
    proc = subprocess.Popen(
        [str(BIN / "vla-ros"), "up", str(bringup)], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                     daemon=True).start()  # fmt: skip
    try:
        camera.instr_pub.publish(String(data=INSTRUCTION))

        def frames(seconds: float) -> None:
            camera.stream(seconds, hz=15.0,
                          make=lambda: rgb_to_image(FRAME, sec_to_stamp(camera.now())))  # fmt: skip

        deadline = time.monotonic() + 300.0  # loading: seconds idle, minutes under heavy load
        while time.monotonic() < deadline and proc.poll() is None:
            frames(0.2)
            if camera.actions and any(x != 0.0 for _, x in cmds):
                break
        out = "".join(lines)
        assert camera.actions, f"the policy never acted:\n{out[-3000:]}"
        action = camera.actions[-1]
        assert tuple(action.names) == ("linear_x", "angular_z") and action.variant == "gluestick"
        np.testing.assert_allclose(np.asarray(action.action), want, rtol=0, atol=1e-6)
        passed = [x for _, x in cmds if x != 0.0]
        assert passed, f"the gate passed no command:\n{out[-3000:]}"
        assert passed[-1] == pytest.approx(want[0], abs=1e-6), "the gate changed the command"

        contacts.publish(Contacts(body_a=["base"], body_b=["wall"], force=[5.0]))
        t_touch = time.monotonic()
        n_actions = len(camera.actions)
        frames(0.6 * HOLD_S)
        held = [x for when, x in cmds if when > t_touch + 0.4]
        assert len(held) >= 3, f"{len(held)} gated commands during the stop"
        assert all(x == 0.0 for x in held), "the gate passed a command during the contact's stop"
        deadline = time.monotonic() + 30.0  # loaded: a step took 0.6 s beside a sweep here
        while len(camera.actions) <= n_actions and time.monotonic() < deadline:
            frames(0.2)
        assert len(camera.actions) > n_actions, "the policy stopped; the gate was to stop it"
        deadline = time.monotonic() + 10.0  # the 1 s diagnostics timer starts at configure
        while not any(v.get("model") for _, v in camera.diagnostics):
            if time.monotonic() > deadline:
                break
            frames(0.2)
        loaded = [values for _, values in camera.diagnostics if values.get("model")]
        assert loaded, "no /diagnostics from the loaded policy"
        assert "runtime_modes" in loaded[-1] and float(loaded[-1]["resident_mb"]) > 0, loaded[-1]
        k = kernel()
        on_tiles = "AMX tiles from" in loaded[-1]["runtime_modes"]
        want_tiles = recipe == "bf16" and k is not None and bool(k.use_tiles())
        assert on_tiles == want_tiles, loaded[-1]["runtime_modes"]
        # the dtype it computes in, on every CPU (a lost dtype option leaves it in float32,
        # and the actions can still fall in the same bins), and what it holds
        assert loaded[-1]["compute_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[recipe]
        assert ("bfloat16" in loaded[-1]["dtypes"]) == (recipe == "bf16"), loaded[-1]["dtypes"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    time.sleep(0.2)  # the reader thread's last lines
    out = "".join(lines)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped: SIGINT" in out and "final zero command" in out, out[-3000:]
    report = json.loads((reports / "safety.json").read_text())
    assert report["summary"]["violations"]["collision"] >= 1, report["summary"]
