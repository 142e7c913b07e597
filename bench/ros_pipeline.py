"""Benchmark: a 30 Hz 640x480 camera through the policy node and the safety monitor, over DDS.

Starts the policy node and the safety monitor as real processes, publishes rgb8 frames at the
camera rate from this process, and measures:
  - actions per second (VLAAction) and gated commands per second (cmd_vel),
  - frame-to-action latency (VLAAction receipt - its frame stamp) and frame-to-command latency
    (gated cmd_vel receipt - stamp of the frame the action just before it was computed from),
  - stale actions: actions whose frame was older than the node's max_image_age_s on receipt
    (must be 0),
  - CPU use of each node process (percent of one core, from /proc).

    .venv/bin/python bench/ros_pipeline.py [--seconds 20] [--artifact embedded|FOLDER]

`--overhead` measures instead, in one process, the node's per-frame cost outside the model for a
checkpoint adapter (`openvla` on the OpenVLA-contract fixture of test/checkpoint_fixtures.py, or
`--artifact FOLDER` with `--adapter`): sensor_msgs/Image -> RGB conversion, the processor
(image and tokenised prompt) and the model's own `predict_action`, per frame: the processor
with the prompt tokenised each frame, the prompt cached per instruction, and the image through
`models/pixel_inputs.py` (the processor's own resize, exactly; or area averaging).

    .venv/bin/python bench/ros_pipeline.py --overhead [--frames 100]

Without trained weights it benchmarks the shipped architecture with untrained weights (same
compute), and says so.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
from vla_pruned_ros.ros.dds import use_localhost_profile  # noqa: E402

use_localhost_profile()

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from vla_pruned_ros_msgs.msg import VLAAction  # noqa: E402

from vla_pruned_ros.evaluation.stats import percentile  # noqa: E402
from vla_pruned_ros.models.embedded import DEFAULT_WEIGHTS  # noqa: E402
from vla_pruned_ros.ros import topics  # noqa: E402
from vla_pruned_ros.ros.conversions import sec_to_stamp, stamp_to_sec  # noqa: E402
from vla_pruned_ros.ros.image_io import rgb_to_image  # noqa: E402
from vla_pruned_ros.ros.policy_node import INSTRUCTION_QOS  # noqa: E402

MAX_AGE_S = 0.5


def _p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _artifact(requested: str, tmp: Path) -> tuple[str, str]:
    if requested != "embedded" or (DEFAULT_WEIGHTS / "model.safetensors").is_file():
        return requested, "trained" if requested == "embedded" else requested
    from vla_pruned_ros.models.embedded import EmbeddedVLA, EmbeddedVLAConfig, save_embedded

    save_embedded(EmbeddedVLA.from_minilm(EmbeddedVLAConfig()), tmp / "untrained")
    return str(tmp / "untrained"), "untrained weights, shipped architecture"


def overhead(artifact: str, adapter: str, frames: int, options: dict) -> int:
    """Per-frame milliseconds of conversion, processor and model for a checkpoint adapter, four
    ways, interleaved frame by frame in this one process (so machine load hits them alike)."""
    import torch

    from vla_pruned_ros.models.registry import load_policy
    from vla_pruned_ros.ros.image_io import image_to_rgb

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    msgs = [rgb_to_image(im, sec_to_stamp(0.0)) for im in images]
    variants = {
        "processor, prompt each frame": dict(cache_prompt=False),
        "processor image, prompt cached": dict(cache_prompt=True),
        "fast pixels (exact), prompt cached": dict(cache_prompt=True),
        "fast pixels, area resize, prompt cached": dict(cache_prompt=True, resize="area"),
    }
    policies = {}
    for name, extra in variants.items():
        policies[name] = load_policy(artifact, "nav", adapter=adapter, **extra, **options)
    policies["processor image, prompt cached"]._pixels = None  # the image processor itself
    for name, policy in policies.items():
        print(f"  {name}: image through {policy.pixel_path}")
    times = {name: ([], [], []) for name in policies}
    actions = {name: [] for name in policies}
    for i in range(frames + 5):
        for name, policy in policies.items():
            t0 = time.perf_counter()
            rgb = image_to_rgb(msgs[i % len(msgs)])
            t1 = time.perf_counter()
            inputs = policy.inputs(rgb, "go to the red marker")
            t2 = time.perf_counter()
            with torch.inference_mode():
                action = policy.model.predict_action(**inputs, unnorm_key=policy.unnorm_key,
                                                     do_sample=False)  # fmt: skip
            t3 = time.perf_counter()
            if i >= 5:  # warm-up frames left out
                for series, ms in zip(times[name], (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    series.append(1e3 * ms)
                actions[name].append(np.asarray(action, np.float32))
    print(
        f"{artifact} through adapter {adapter}, 640x480 rgb8 frames, {frames} frames each, "
        "variants interleaved, 1 torch thread; ms p50 / p99"
    )
    print("| run | Image -> RGB | processor + prompt | outside the model | predict_action |"
          " actions equal to the first row's |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    first = next(iter(actions.values()))
    for name, (conv, prep, model) in times.items():
        outside = [a + b for a, b in zip(conv, prep, strict=True)]
        same = sum(np.array_equal(a, b) for a, b in zip(actions[name], first, strict=True))
        print(f"| {name} | {_p50_p99(conv)} | {_p50_p99(prep)} | {_p50_p99(outside)} | "
              f"{_p50_p99(model)} | {same}/{len(first)} |")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--artifact", default="embedded")
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--overhead", action="store_true",
                        help="per-frame cost outside the model (checkpoint adapter)")  # fmt: skip
    parser.add_argument("--adapter", default="openvla")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    if args.overhead:
        options = {"trust_remote_code": True}
        artifact = args.artifact
        if artifact == "embedded":
            sys.path.insert(0, str(ROOT / "test"))
            from checkpoint_fixtures import write_openvla_contract_fixture

            tmp = Path(tempfile.mkdtemp(prefix="vla_bench_"))
            artifact = str(write_openvla_contract_fixture(tmp / "openvla_contract_fixture"))
        return overhead(artifact, args.adapter, args.frames, options)
    tmp = Path(tempfile.mkdtemp(prefix="vla_bench_"))
    artifact, label = _artifact(args.artifact, tmp)
    py = [sys.executable, "-m"]
    policy = subprocess.Popen(
        [*py, "vla_pruned_ros.ros.policy_node", "--ros-args", "--params-file",
         str(ROOT / "config/policy_nav.yaml"), "-p", f"artifact:={artifact}",
         "-p", f"max_image_age_s:={MAX_AGE_S}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    monitor = subprocess.Popen(
        [*py, "vla_pruned_ros.ros.safety_monitor_node", "--ros-args", "--params-file",
         str(ROOT / "config/safety_monitor_nav.yaml"), "-p", f"report_dir:={tmp / 'reports'}",
         "-p", "limits.min_obstacle_distance:=0.0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    image_pub = node.create_publisher(Image, topics.CAMERA, qos_profile_sensor_data)
    instr_pub = node.create_publisher(String, topics.INSTRUCTION, INSTRUCTION_QOS)
    actions: list[tuple[float, float]] = []  # (receipt, frame stamp)
    commands: list[tuple[float, float]] = []  # (receipt, frame stamp of the latest action)

    def on_action(msg: VLAAction) -> None:
        actions.append((node.get_clock().now().nanoseconds * 1e-9, stamp_to_sec(msg.header.stamp)))

    def on_cmd(msg: Twist) -> None:
        if actions and (msg.linear.x or msg.angular.z):
            commands.append((node.get_clock().now().nanoseconds * 1e-9, actions[-1][1]))

    node.create_subscription(VLAAction, topics.ACTION, on_action, 100)
    node.create_subscription(Twist, topics.CMD, on_cmd, 100)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    instr_pub.publish(String(data="go to the red marker"))

    def stream(seconds: float) -> int:
        sent, period = 0, 1.0 / args.hz
        next_t = time.monotonic()
        end = next_t + seconds
        while time.monotonic() < end:
            msg = rgb_to_image(
                frames[sent % len(frames)], sec_to_stamp(node.get_clock().now().nanoseconds * 1e-9)
            )
            image_pub.publish(msg)
            sent += 1
            next_t += period
            while time.monotonic() < next_t:
                rclpy.spin_once(node, timeout_sec=max(0.0, next_t - time.monotonic()))
        return sent

    print(f"warming up ({label}) ...", flush=True)
    deadline = time.monotonic() + 60
    while not actions and time.monotonic() < deadline:
        stream(0.5)
    if not actions:
        print("no actions within 60 s: the policy node did not start", file=sys.stderr)
        return 1
    stream(2.0)
    actions.clear()
    commands.clear()
    cpu0 = {p.pid: _cpu_seconds(p.pid) for p in (policy, monitor)}
    t0 = time.monotonic()
    sent = stream(args.seconds)
    for _ in range(20):
        rclpy.spin_once(node, timeout_sec=0.01)
    wall = time.monotonic() - t0
    cpu = {p.pid: 100 * (_cpu_seconds(p.pid) - cpu0[p.pid]) / wall for p in (policy, monitor)}
    for proc in (policy, monitor):
        proc.terminate()
        proc.wait(timeout=10)
    node.destroy_node()
    rclpy.shutdown()

    act_lat = [1e3 * (r - s) for r, s in actions]
    cmd_lat = [1e3 * (r - s) for r, s in commands]
    stale = sum(1 for r, s in actions if r - s > MAX_AGE_S)
    rows = [
        ("model", label),
        ("camera", f"640x480 rgb8 at {args.hz:g} Hz, {sent} frames in {wall:.1f} s"),
        ("actions per second", f"{len(actions) / wall:.2f}"),
        ("gated commands per second", f"{len(commands) / wall:.2f}"),
        ("frame-to-action latency p50 / p99 (ms)", _p50_p99(act_lat)),
        ("frame-to-command latency p50 / p99 (ms)", _p50_p99(cmd_lat)),
        ("stale actions (frame older than 0.5 s)", str(stale)),
        ("policy node CPU (% of one core)", f"{cpu[policy.pid]:.0f}"),
        ("safety monitor CPU (% of one core)", f"{cpu[monitor.pid]:.0f}"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"| {'metric'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    return 0 if stale == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
