"""The policy node as a real process on real DDS, with a tiny embedded VLA built in the test."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from vla_pruned_ros_msgs.msg import VLAAction

from vla_pruned_ros.models.embedded import EmbeddedVLA, EmbeddedVLAConfig, save_embedded
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import sec_to_stamp, stamp_to_sec
from vla_pruned_ros.ros.image_io import rgb_to_image
from vla_pruned_ros.ros.policy_node import INSTRUCTION_QOS

ROOT = Path(__file__).resolve().parents[2]
TINY = EmbeddedVLAConfig(
    image_size=16, text_layers=1, channels=(8, 8), head_hidden=16,
    action_dims={"nav": 2}, action_scale={"nav": [0.5, 1.0]},
    action_names={"nav": ["linear_x", "angular_z"]},
)  # fmt: skip


def _save_tiny(folder: Path, poison: bool = False) -> Path:
    torch.manual_seed(0)
    model = EmbeddedVLA.from_minilm(TINY)
    if poison:  # a model whose actions are NaN
        with torch.no_grad():
            model.heads["nav"][2].bias.fill_(float("nan"))
    save_embedded(model, folder)
    return folder


class Camera:
    """The test process: publishes frames and instructions, records actions and diagnostics."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("camera_and_watcher", context=self.context)
        self.image_pub = self.node.create_publisher(Image, topics.CAMERA, qos_profile_sensor_data)
        self.instr_pub = self.node.create_publisher(String, topics.INSTRUCTION, INSTRUCTION_QOS)
        self.actions: list[VLAAction] = []
        self.sent: set[float] = set()  # stamps of every frame published
        self.diagnostics: list = []
        self.node.create_subscription(VLAAction, topics.ACTION, self.actions.append, 50)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._diag, 50)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("vla_policy"):
                level = (
                    int.from_bytes(status.level)
                    if isinstance(status.level, bytes)
                    else status.level
                )
                self.diagnostics.append((level, {kv.key: kv.value for kv in status.values}))

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def frame(self, stamp: float | None = None, value: int = 128) -> Image:
        rgb = np.full((24, 32, 3), value, np.uint8)
        return rgb_to_image(rgb, sec_to_stamp(self.now() if stamp is None else stamp))

    def stream(self, seconds: float, hz: float = 30.0, make=None) -> list[float]:
        """Publish frames at `hz` for `seconds`; returns their stamps."""
        stamps, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            msg = make() if make else self.frame()
            stamps.append(stamp_to_sec(msg.header.stamp))
            self.sent.add(stamps[-1])
            self.image_pub.publish(msg)
            self.spin(1.0 / hz)
        return stamps

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.005)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _start_policy(artifact: Path | str, *params: str, env=None) -> subprocess.Popen:
    extra = [arg for p in params for arg in ("-p", p)]
    return subprocess.Popen(
        [sys.executable, "-m", "vla_pruned_ros.ros.policy_node", "--ros-args",
         "--params-file", str(ROOT / "config" / "policy_nav.yaml"),
         "-p", f"artifact:={artifact}", "-p", "control_rate_hz:=10.0", *extra],
        env=env,
    )  # fmt: skip


@pytest.fixture
def camera():
    cam = Camera()
    yield cam
    cam.close()


@pytest.fixture
def policy(tmp_path: Path):
    proc = _start_policy(_save_tiny(tmp_path / "tiny"))
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def _wait_for_actions(camera: Camera, timeout: float = 30.0) -> None:
    camera.instr_pub.publish(String(data="go to the red marker"))
    deadline = time.monotonic() + timeout
    while not camera.actions and time.monotonic() < deadline:
        camera.stream(0.2)
    assert camera.actions, "the policy node never acted"


def test_acts_on_the_newest_frame_only(camera: Camera, policy) -> None:
    _wait_for_actions(camera)
    camera.stream(1.0)  # best-effort delivery settles after discovery
    camera.actions.clear()
    stamps = camera.stream(3.0, hz=30.0)
    camera.spin(0.3)
    acted = [stamp_to_sec(a.header.stamp) for a in camera.actions]
    # 10 Hz nominal; a loaded 2-core machine may act less often, never more.
    assert 3 <= len(acted) <= 35, f"{len(acted)} actions in 3 s at 10 Hz"
    assert all(s in camera.sent for s in acted), "an action carries a stamp no frame had"
    assert acted == sorted(set(acted)), "actions went back in time or repeated a frame"
    assert len(acted) < len(stamps) / 2, "frames were queued instead of dropped"
    action = camera.actions[-1]
    assert list(action.names) == ["linear_x", "angular_z"]
    assert abs(action.action[0]) <= 0.5 and action.latency_ms > 0
    assert action.instruction == "go to the red marker" and action.variant == "dense"
    camera.spin(1.2)
    _, values = camera.diagnostics[-1]
    assert int(values["frames_dropped"]) > 0 and float(values["latency_p50_ms"]) > 0


def test_stale_frames_are_skipped_and_counted(camera: Camera, policy) -> None:
    _wait_for_actions(camera)
    camera.spin(0.5)
    camera.actions.clear()
    camera.stream(1.5, make=lambda: camera.frame(stamp=camera.now() - 5.0))
    camera.spin(1.2)
    assert not camera.actions, "acted on frames 5 s old"
    assert int(camera.diagnostics[-1][1]["stale"]) > 0


def test_bad_input_leaves_the_node_alive_and_commandless(camera: Camera, policy) -> None:
    _wait_for_actions(camera)
    camera.spin(0.5)
    camera.actions.clear()
    rng = np.random.default_rng(0)
    bad_stamps = []

    def bad_frame() -> Image:
        msg = camera.frame()
        kind = rng.integers(4)
        if kind == 0:
            msg.encoding = "32FC7"
        elif kind == 1:
            msg.data = bytes(rng.integers(0, 256, rng.integers(0, 100), dtype=np.uint8))
        elif kind == 2:
            msg.height, msg.width = 0, 0
        else:
            msg.step = 1
        bad_stamps.append(stamp_to_sec(msg.header.stamp))
        return msg

    for text in ["", "   ", "x" * 10_000, "go to\x07 the\x1b red"]:  # DDS cuts at NUL
        camera.instr_pub.publish(String(data=text))
    camera.stream(1.5, make=bad_frame)
    camera.spin(1.2)
    assert policy.poll() is None, "the node died on bad input"
    assert not camera.actions, "published an action from a bad frame"
    levels = [level for level, values in camera.diagnostics[-3:]]
    assert any(level >= 1 for level in levels)
    assert int(camera.diagnostics[-1][1]["rejected"]) > 0 or any(
        int(v["rejected"]) > 0 for _, v in camera.diagnostics
    )
    camera.stream(1.0)  # good frames again: it still acts, on the last good instruction
    camera.spin(0.3)
    assert camera.actions and camera.actions[-1].instruction == "go to the red marker"


def test_non_finite_actions_are_not_published_and_reported_as_error(
    camera: Camera, tmp_path: Path
) -> None:
    proc = _start_policy(_save_tiny(tmp_path / "nan", poison=True))
    try:
        camera.instr_pub.publish(String(data="go to the red marker"))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not any(
            int(v.get("invalid_action", 0)) > 0 for _, v in camera.diagnostics
        ):
            camera.stream(0.2)
        assert any(level == 2 for level, _ in camera.diagnostics), "no ERROR diagnostic"
        assert not camera.actions
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_loads_a_gluestick_artifact_packed_and_reports_it(camera: Camera, tmp_path: Path) -> None:
    from vla_pruned_ros.compression import gluestick, prune
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import save_embedded_artifact

    dense = load_embedded(_save_tiny(tmp_path / "tiny"))
    model = gluestick(dense, prune(dense, "magnitude", "2:4"), 4, factor_dtype="int8")
    artifact = save_embedded_artifact(model, tmp_path / "art", source=tmp_path / "tiny")
    proc = _start_policy(artifact, "runtime_mode:=packed")
    try:
        _wait_for_actions(camera)
        camera.spin(1.5)  # one diagnostics period
        _, values = camera.diagnostics[-1]
        assert values["model"] == "art" and values["variant"] == "gluestick"
        assert values["rank"] == "4" and float(values["memory_mb"]) > 0
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_loads_a_structurally_pruned_artifact(camera: Camera, tmp_path: Path) -> None:
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import save_embedded_artifact, structured_prune

    dense = load_embedded(_save_tiny(tmp_path / "tiny"))
    plan = {"ffn": {"ratio": 0.5}, "heads": {"ratio": 0.5}}
    model, structure = structured_prune(dense, plan, "magnitude")
    assert structure["params"] < structure["params_dense"]
    artifact = save_embedded_artifact(model, tmp_path / "units", source=tmp_path / "tiny",
                                      structure=structure, method="units-magnitude")  # fmt: skip
    proc = _start_policy(artifact)
    try:
        _wait_for_actions(camera)
        camera.spin(1.5)
        _, values = camera.diagnostics[-1]
        assert values["model"] == "units" and values["variant"] == "structured"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_runs_a_users_own_adapter_named_module_class(camera: Camera) -> None:
    import os

    env = {**os.environ, "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    proc = _start_policy("unused", "adapter:=user_adapter:ConstantPolicy", env=env)
    try:
        _wait_for_actions(camera)
        assert list(camera.actions[-1].action) == [0.25, -0.5]
        assert camera.actions[-1].model_id == "constant"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
