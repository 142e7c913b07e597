"""VLA policy node: camera + instruction in, VLAAction (and a Twist) out.

A lifecycle node (ros2/demos style): configure loads the model, activate starts acting,
deactivate stops publishing, cleanup frees the model. Frames go through a one-item mailbox to a
single worker thread, so inference never runs in a subscription callback, at most one inference
is in flight, and only the newest frame is ever used. A frame older than `max_image_age_s`
(judged from its header stamp against the node clock, so it is right under sim time and bag
replay) is skipped and counted.

    ros2 run vla_pruned_ros policy_node --ros-args --params-file config/policy_nav.yaml
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from vla_pruned_ros_msgs.msg import VLAAction

from vla_pruned_ros.models.base import PolicyAdapter
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import action_to_twist, stamp_to_sec
from vla_pruned_ros.ros.frame_slot import NewestSlot
from vla_pruned_ros.ros.image_io import ImageRejected, image_to_rgb
from vla_pruned_ros.ros.runner import run_node

INSTRUCTION_QOS = QoSProfile(
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)
MAX_INSTRUCTION_CHARS = 512


def check_instruction(text: str) -> str | None:
    """Why an instruction is unusable, or None if it is fine."""
    if not text.strip():
        return "empty instruction"
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f"instruction longer than {MAX_INSTRUCTION_CHARS} characters ({len(text)})"
    if any(ord(c) < 32 and c not in "\t\n" for c in text) or "\ufffd" in text:
        return "instruction contains control or undecodable characters"
    return None


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("vla_policy", **kwargs)
        for name, default in {
            "artifact": "embedded",
            "adapter": "embedded",  # or a user's PolicyAdapter class as "module:Class"
            "task": "nav",
            "runtime_mode": "materialize",
            "device": "cpu",
            "control_rate_hz": 10.0,
            "image_topic": topics.CAMERA,
            "instruction_topic": topics.INSTRUCTION,
            "action_topic": topics.ACTION,
            "cmd_topic": topics.CMD_RAW,
            "publish_twist": True,
            "max_image_age_s": 0.5,
            "action_limit_scale": 1.0,
            "dry_run": False,
            "autostart": True,  # configure + activate at start; false: a lifecycle manager does
        }.items():
            self.declare_parameter(name, default)
        self.policy: PolicyAdapter | None = None
        self.slot: NewestSlot[Image] = NewestSlot()
        self.instruction: str | None = None
        self.latencies: deque[float] = deque(maxlen=500)
        self.counters = dict.fromkeys(["published", "stale", "rejected", "invalid_action"], 0)
        self.fault: tuple[int, str] | None = None  # (diagnostic level, message) since last report
        self._active = threading.Event()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._subs: list = []
        self._last_publish_times: deque[float] = deque(maxlen=50)

    def p(self, name: str):
        return self.get_parameter(name).value

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from vla_pruned_ros.models.registry import load_policy

        device = self.p("device")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                self.get_logger().warning(f"device {device!r} requested but no CUDA; using cpu")
                device = "cpu"
        try:
            self.policy = load_policy(
                self.p("artifact"),
                self.p("task"),
                mode=self.p("runtime_mode"),
                device=device,
                adapter=self.p("adapter"),
            )
        except (OSError, ValueError) as err:
            self.get_logger().error(f"cannot load policy: {err}")
            return TransitionCallbackReturn.FAILURE
        info = self.policy.info
        scale = float(self.p("action_limit_scale"))
        self.low = np.asarray(info.action_low, np.float32) * scale
        self.high = np.asarray(info.action_high, np.float32) * scale
        self.action_pub = self.create_lifecycle_publisher(VLAAction, self.p("action_topic"), 10)
        self.cmd_pub = self.create_lifecycle_publisher(Twist, self.p("cmd_topic"), 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        group = MutuallyExclusiveCallbackGroup()
        self._subs = [
            self.create_subscription(
                Image, self.p("image_topic"), self._on_image, qos_profile_sensor_data
            ),
            self.create_subscription(
                String, self.p("instruction_topic"), self._on_instruction, INSTRUCTION_QOS
            ),
        ]
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, group)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="vla_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"loaded {info.model_id} ({info.variant}, rank {info.rank}, "
            f"{info.memory_bytes / 1e6:.1f} MB) for {self.p('task')}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.slot.take(timeout=0)  # never act on a frame that arrived while inactive
        self._active.set()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self.destroy_timer(self._diag_timer)
        self.destroy_lifecycle_publisher(self.action_pub)
        self.destroy_lifecycle_publisher(self.cmd_pub)
        self.destroy_publisher(self.diag_pub)
        self.policy = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def stop_worker(self) -> None:
        """Stop acting and join the inference thread (before the node's handles go away)."""
        self._active.clear()
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    # -- inputs -----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self.slot.put(msg)

    def _on_instruction(self, msg: String) -> None:
        problem = check_instruction(msg.data)
        if problem:
            self.counters["rejected"] += 1
            self._report(DiagnosticStatus.WARN, f"rejected instruction: {problem}")
            return
        if msg.data != self.instruction:
            self.get_logger().info(f"instruction: {msg.data!r}")
        self.instruction = msg.data

    # -- the worker: newest frame -> model -> action ----------------------------------------
    def _work(self) -> None:
        period = 1.0 / float(self.p("control_rate_hz"))
        next_time = time.monotonic()
        while not self._stop.is_set():
            msg = self.slot.take(timeout=0.1)
            if msg is None or not self._active.is_set() or self.policy is None:
                continue
            self._act(msg)
            next_time = max(next_time + period, time.monotonic())
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def _act(self, msg: Image) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        age = now - stamp_to_sec(msg.header.stamp)
        if age > float(self.p("max_image_age_s")):
            self.counters["stale"] += 1
            return
        instruction = self.instruction  # read once: the callback may replace it meanwhile
        if instruction is None:
            return
        try:
            rgb = image_to_rgb(msg)
        except ImageRejected as err:
            self.counters["rejected"] += 1
            self._report(DiagnosticStatus.WARN, f"image rejected: {err}")
            return
        start = time.perf_counter()
        action = np.asarray(self.policy.predict(rgb, instruction), np.float32)
        latency_ms = (time.perf_counter() - start) * 1e3
        if not np.all(np.isfinite(action)):
            self.counters["invalid_action"] += 1
            self._report(
                DiagnosticStatus.ERROR, "model produced a non-finite action; not published"
            )
            return
        action = np.clip(action, self.low, self.high)
        self.latencies.append(latency_ms)
        info = self.policy.info
        out = VLAAction(action=action.tolist(), names=list(info.action_names))
        out.header = msg.header  # the stamp of the frame this action was computed from
        out.action_space, out.instruction = info.action_space, instruction
        out.variant, out.rank, out.model_id = info.variant, info.rank, info.model_id
        out.latency_ms = float(latency_ms)
        if self.p("dry_run"):
            return
        self.action_pub.publish(out)
        if self.p("publish_twist"):
            self.cmd_pub.publish(action_to_twist(info.action_names, action))
        self.counters["published"] += 1
        self._last_publish_times.append(time.monotonic())

    # -- diagnostics ------------------------------------------------------------------------
    def _report(self, level: int, message: str) -> None:
        """Log a fault and keep the worst one for the next diagnostics message."""
        log = (
            self.get_logger().error
            if level == DiagnosticStatus.ERROR
            else self.get_logger().warning
        )
        log(message, throttle_duration_sec=1.0)
        if self.fault is None or level >= self.fault[0]:
            self.fault = (level, message)

    def _publish_diagnostics(self) -> None:
        info = self.policy.info if self.policy else None
        status = DiagnosticStatus(name="vla_pruned_ros: vla_policy", hardware_id="policy")
        if self.fault is not None:
            status.level, status.message = self.fault
        else:
            status.level = DiagnosticStatus.OK
            status.message = "acting" if self._active.is_set() else "inactive"
        lat = sorted(self.latencies)
        times = list(self._last_publish_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        values = {
            "model": info.model_id if info else "",
            "variant": info.variant if info else "",
            "rank": str(info.rank) if info else "",
            "memory_mb": f"{info.memory_bytes / 1e6:.2f}" if info else "",
            "latency_p50_ms": f"{lat[len(lat) // 2]:.2f}" if lat else "",
            "latency_p99_ms": f"{lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)]:.2f}"
            if lat
            else "",
            "rate_hz": f"{rate:.2f}",
            "frames_received": str(self.slot.received),
            "frames_dropped": str(self.slot.dropped),
            **{k: str(v) for k, v in self.counters.items()},
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        self.fault = None


def main(argv: list[str] | None = None) -> int:
    """Run the node; with `autostart` it configures and activates itself."""

    def make() -> PolicyNode:
        node = PolicyNode()
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ValueError("configure failed (see the log above)")
            node.trigger_activate()
        return node

    return run_node(
        make,
        argv,
        on_shutdown=PolicyNode.stop_worker,
        executor_factory=lambda: MultiThreadedExecutor(num_threads=2),
    )


if __name__ == "__main__":
    sys.exit(main())
