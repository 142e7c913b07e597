"""VLA policy node: camera + instruction in, VLAAction (and a Twist) out.

A lifecycle node (ros2/demos style): configure loads the model, activate starts acting,
deactivate stops publishing, cleanup frees the model. Frames go through a one-item mailbox to a
single worker thread, so inference never runs in a subscription callback, at most one inference
is in flight, and only the newest frame is ever used. A frame older than `max_image_age_s`
(judged from its header stamp against the node clock, so it is right under sim time and bag
replay) is skipped and counted; one stamped ahead of the clock beyond `clock_skew_tolerance_s`
is rejected and counted as clock skew (`monitor/stamps.check_stamp`), never taken as fresh.

Failures do not go quiet: a model step that raises is logged once per kind, counted and reported
as ERROR, and the worker tries again on the next frame; after `max_consecutive_failures` steps in
a row without an action the node halts (publishes nothing, says so in /diagnostics) until it is
deactivated and activated again, a deliberate operator action rather than a silent auto-retry on
a model that has shown it fails. A refused or empty instruction stops the policy until a valid
one arrives. Parameters are applied live or refused with a reason (`ros/policy_params.py`).

    ros2 run vla_pruned_ros policy_node --ros-args --params-file config/policy_nav.yaml
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from vla_pruned_ros_msgs.msg import VLAAction

from vla_pruned_ros.compression.runtime_modes import RuntimeSummary, runtime_summary
from vla_pruned_ros.evaluation.stats import percentile
from vla_pruned_ros.models.base import PolicyAdapter
from vla_pruned_ros.models.instruction import check_instruction
from vla_pruned_ros.monitor.categories import CLOCK_SKEW
from vla_pruned_ros.monitor.stamps import check_stamp
from vla_pruned_ros.monitor.velocity import TWIST_FIELDS
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import action_to_twist, stamp_to_sec
from vla_pruned_ros.ros.frame_slot import NewestSlot
from vla_pruned_ros.ros.image_io import ImageRejected, image_to_rgb
from vla_pruned_ros.ros.params import renamed_defaults
from vla_pruned_ros.ros.policy_params import CONFIGURE, PARAMS, check_value
from vla_pruned_ros.ros.runner import run_node

INSTRUCTION_QOS = QoSProfile(
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)
DIAGNOSTICS_PERIOD_S = 1.0
MAX_LOGGED_ERROR_KINDS = 100  # a model raising a new message every step must not grow memory


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("vla_policy", **kwargs)
        try:
            defaults = {name: spec.default for name, spec in PARAMS.items()}
            defaults = renamed_defaults(self, "policy_node", defaults)  # old names, once
            for name, spec in PARAMS.items():
                self.declare_parameter(name, defaults[name], spec.descriptor(name))
        except ParameterException as err:  # a start-time value outside its descriptor's range
            raise ValueError(str(err)) from err
        for name in PARAMS:
            problem = check_value(name, self.p(name))
            if problem:
                raise ValueError(problem)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.policy: PolicyAdapter | None = None
        self.runtime = RuntimeSummary("", {}, 0, "", "")
        self.slot: NewestSlot[Image] = NewestSlot()
        self.instruction: str | None = None
        self.instruction_problem: str | None = None  # why the last instruction was refused
        self.latencies: deque[float] = deque(maxlen=500)
        self.counters = dict.fromkeys(
            ["published", "stale", CLOCK_SKEW, "rejected", "invalid_action", "model_errors"], 0
        )
        self.consecutive_failures = 0
        self.halted: str | None = None  # set after max_consecutive_failures; cleared on activate
        self._logged_error_kinds: set[tuple[str, str]] = set()
        self.fault: tuple[int, str] | None = None  # (diagnostic level, message) since last report
        self._active = threading.Event()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._subs: list = []
        self._last_publish_times: deque[float] = deque(maxlen=50)
        self._last_frame_time: float | None = None  # monotonic: the worker last took a frame
        self._last_step_time: float | None = None  # monotonic: the model last gave an action

    def p(self, name: str):
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse what would not take effect or is invalid; everything else is read live."""
        for param in params:
            spec = PARAMS.get(param.name)
            if spec is None:
                continue
            if spec.kind == CONFIGURE and self.policy is not None:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} is fixed while the node is configured "
                    "(cleanup, set it, configure again)",
                )
            problem = check_value(param.name, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from vla_pruned_ros.compression.memory import unmap_large_allocations
        from vla_pruned_ros.models.adapters import adapter_options
        from vla_pruned_ros.models.registry import load_policy

        # The node is the process's owner, so it may set glibc's allocator policy: freed load-time
        # buffers go back to the OS instead of staying in the node's resident memory.
        unmap_large_allocations()
        device = self.p("device")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                self.get_logger().warning(f"device {device!r} requested but no CUDA; using cpu")
                device = "cpu"
        try:
            policy = load_policy(
                self.p("artifact"),
                self.p("task"),
                mode=self.p("runtime_mode"),
                device=device,
                adapter=self.p("adapter"),
                **adapter_options(
                    self.p("adapter_options"), self.p("unnorm_key"), self.p("trust_remote_code")
                ),
            )
        except (OSError, ValueError) as err:
            self.get_logger().error(f"cannot load policy: {err}")
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # the model's own code: say what it raised, and where
            self.get_logger().error(
                f"cannot load policy ({type(err).__name__}: {err}):\n{traceback.format_exc()}"
            )
            return TransitionCallbackReturn.FAILURE
        info = policy.info
        self.runtime = runtime_of(policy)
        if not any(name in TWIST_FIELDS for name in info.action_names):
            self.get_logger().warning(
                f"{info.model_id} acts in {info.action_space} {list(info.action_names)}: none "
                f"is a velocity field ({', '.join(TWIST_FIELDS)}), so its velocity command is "
                "all zeros; connect them with the adapter option action_map, e.g. "
                "{action_map: {names: [linear_x, angular_z], order: [...], scale: [...]}}"
            )
        self.twist_stamped = bool(self.p("twist_stamped"))
        self.action_pub = self.create_lifecycle_publisher(VLAAction, self.p("action_topic"), 10)
        self.cmd_pub = self.create_lifecycle_publisher(
            TwistStamped if self.twist_stamped else Twist, self.p("cmd_raw_topic"), 10
        )
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        group = MutuallyExclusiveCallbackGroup()
        self._subs = [
            self.create_subscription(
                Image, self.p("camera_topic"), self._on_image, qos_profile_sensor_data
            ),
            self.create_subscription(
                String, self.p("instruction_topic"), self._on_instruction, INSTRUCTION_QOS
            ),
        ]
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, group)
        self.policy = policy  # from here on, configure-time parameters are refused
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="vla_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"loaded {info.model_id} ({info.variant}, rank {info.rank}, "
            f"{info.memory_bytes / 1e6:.1f} MB) for {self.p('task')}; runs as "
            f"{self.runtime.modes}, {self.runtime.resident_bytes / 1e6:.1f} MB resident "
            f"({self.runtime.dtypes}), computing in {self.runtime.compute_dtype}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.slot.take(timeout=0)  # never act on a frame that arrived while inactive
        self.halted, self.consecutive_failures = None, 0  # re-activation is the way to retry
        self._logged_error_kinds.clear()
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
        """A refused or empty instruction stops the policy until a valid one arrives: carrying
        on with the previous one would drive the robot on words the operator withdrew."""
        problem = check_instruction(msg.data)
        if problem:
            self.counters["rejected"] += 1
            was_acting = self.instruction is not None
            self.instruction, self.instruction_problem = None, problem
            self.get_logger().warning(
                f"{problem} ({msg.data[:80]!r}): "
                + ("stopped; " if was_acting else "")
                + "not acting until a valid instruction arrives"
            )
            return
        if msg.data != self.instruction:
            self.get_logger().info(f"instruction: {msg.data!r}")
        self.instruction, self.instruction_problem = msg.data, None

    # -- the worker: newest frame -> model -> action ----------------------------------------
    def _work(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            msg = self.slot.take(timeout=0.1)
            if msg is None or not self._active.is_set() or self.policy is None:
                continue
            self._last_frame_time = time.monotonic()
            self._act(msg)
            period = 1.0 / float(self.p("control_rate_hz"))  # live: read every step
            next_time = max(next_time + period, time.monotonic())
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def _act(self, msg: Image) -> None:
        if self.halted:
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        tolerance = float(self.p("clock_skew_tolerance_s"))
        stamp = check_stamp(stamp_to_sec(msg.header.stamp), now, tolerance)
        if stamp.future:
            self.counters[CLOCK_SKEW] += 1
            self._report(
                DiagnosticStatus.WARN,
                f"{CLOCK_SKEW}: frame stamped {-stamp.age_s:.3f} s ahead of the node clock "
                f"(tolerance {tolerance} s); ignored",
            )
            return
        if stamp.stale(float(self.p("max_image_age_s"))):
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
        info = self.policy.info
        start = time.perf_counter()
        try:
            action = np.asarray(self.policy.predict(rgb, instruction), np.float32)
            if action.shape != (len(info.action_names),):
                raise ValueError(
                    f"action has shape {action.shape}, expected ({len(info.action_names)},)"
                )
        except Exception as err:  # any model failure: count it, report it, try the next frame
            self._model_step_failed(err)
            return
        latency_ms = (time.perf_counter() - start) * 1e3
        if not np.all(np.isfinite(action)):
            self.counters["invalid_action"] += 1
            self._report(
                DiagnosticStatus.ERROR, "model produced a non-finite action; not published"
            )
            self._count_failure("non-finite action")
            return
        self.consecutive_failures = 0
        self._last_step_time = time.monotonic()
        scale = float(self.p("action_limit_scale"))  # live: read every step
        low = np.asarray(info.action_low, np.float32) * scale
        high = np.asarray(info.action_high, np.float32) * scale
        action = np.clip(action, low, high)
        self.latencies.append(latency_ms)
        out = VLAAction(action=action.tolist(), names=list(info.action_names))
        out.header = msg.header  # the stamp of the frame this action was computed from
        out.action_space, out.instruction = info.action_space, instruction
        out.variant, out.rank, out.model_id = info.variant, info.rank, info.model_id
        out.latency_ms = float(latency_ms)
        if self.p("dry_run") or self.instruction is None:  # withdrawn during the step
            return
        self.action_pub.publish(out)
        if self.p("publish_twist"):
            self.cmd_pub.publish(self._velocity_command(info.action_names, action, msg))
        self.counters["published"] += 1
        self._last_publish_times.append(time.monotonic())

    def _velocity_command(self, names, action: np.ndarray, frame: Image) -> Twist | TwistStamped:
        """The command as configured: a Twist, or a TwistStamped with the frame's stamp in the
        robot's base frame (what Jazzy/Kilted Nav2 expects)."""
        twist = action_to_twist(names, action)
        if not self.twist_stamped:
            return twist
        out = TwistStamped(twist=twist)
        out.header.stamp = frame.header.stamp
        out.header.frame_id = topics.BASE_FRAME
        return out

    def _model_step_failed(self, err: Exception) -> None:
        """Log a failing model step once per kind (type + message), count it, report ERROR."""
        kind = (type(err).__name__, str(err))
        self.counters["model_errors"] += 1
        if kind not in self._logged_error_kinds:
            if len(self._logged_error_kinds) < MAX_LOGGED_ERROR_KINDS:
                self._logged_error_kinds.add(kind)
            self.get_logger().error(
                f"model step failed: {kind[0]}: {kind[1]} (logged once per kind; "
                f"counted as model_errors)\n{traceback.format_exc()}"
            )
        self._note_fault(DiagnosticStatus.ERROR, f"model step failed: {kind[0]}: {kind[1]}")
        self._count_failure(f"{kind[0]}: {kind[1]}")

    def _count_failure(self, what: str) -> None:
        """One more step in a row without an action; at the limit, halt until re-activated."""
        self.consecutive_failures += 1
        limit = int(self.p("max_consecutive_failures"))
        if self.consecutive_failures >= limit and not self.halted:
            self.halted = (
                f"halted: {self.consecutive_failures} model steps failed in a row "
                f"(last: {what}); not publishing until deactivated and activated again"
            )
            self.get_logger().error(self.halted)

    # -- diagnostics ------------------------------------------------------------------------
    def _note_fault(self, level: int, message: str) -> None:
        """Keep the worst fault for the next diagnostics message."""
        if self.fault is None or level >= self.fault[0]:
            self.fault = (level, message)

    def _report(self, level: int, message: str) -> None:
        """Log a fault (throttled) and keep the worst one for the next diagnostics message."""
        log = (
            self.get_logger().error
            if level == DiagnosticStatus.ERROR
            else self.get_logger().warning
        )
        log(message, throttle_duration_sec=1.0)
        self._note_fault(level, message)

    def _state(self) -> tuple[int, str]:
        """What the node is doing, from what it did: "acting" only if an action was published
        within the last diagnostics period (or two control periods, if longer)."""
        if self.halted:
            return DiagnosticStatus.ERROR, self.halted
        if self.policy is None:
            return DiagnosticStatus.OK, "unconfigured"
        if not self._active.is_set():
            return DiagnosticStatus.OK, "inactive"
        if self.instruction is None:
            if self.instruction_problem:
                return (
                    DiagnosticStatus.WARN,
                    f"not acting: {self.instruction_problem}; waiting for a valid instruction",
                )
            return DiagnosticStatus.OK, "waiting for an instruction"
        window = max(DIAGNOSTICS_PERIOD_S, 2.0 / float(self.p("control_rate_hz")))
        now = time.monotonic()

        def recent(t: float | None) -> bool:
            return t is not None and now - t <= window

        if self.p("dry_run"):
            if recent(self._last_step_time):
                return DiagnosticStatus.OK, "dry run: computing actions, publishing none"
        elif self._last_publish_times and recent(self._last_publish_times[-1]):
            return DiagnosticStatus.OK, "acting"
        if recent(self._last_frame_time):
            return DiagnosticStatus.WARN, f"not acting: frames arrive but no action in {window} s"
        return DiagnosticStatus.OK, "waiting for frames"

    def _publish_diagnostics(self) -> None:
        info = self.policy.info if self.policy else None
        status = DiagnosticStatus(name="vla_pruned_ros: vla_policy", hardware_id="policy")
        level, message = self._state()
        fault = self.fault
        if fault is not None and fault[0] >= level:
            level, message = fault[0], f"{message}; {fault[1]}"
        status.level, status.message = level, message
        lat = list(self.latencies)
        times = list(self._last_publish_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        values = {
            "model": info.model_id if info else "",
            "variant": info.variant if info else "",
            "rank": str(info.rank) if info else "",
            "memory_mb": f"{info.memory_bytes / 1e6:.2f}" if info else "",
            "runtime_modes": self.runtime.modes if info else "",
            "resident_mb": f"{self.runtime.resident_bytes / 1e6:.2f}" if info else "",
            "dtypes": self.runtime.dtypes if info else "",
            "compute_dtype": self.runtime.compute_dtype if info else "",
            "latency_p50_ms": f"{percentile(lat, 50):.2f}" if lat else "",
            "latency_p99_ms": f"{percentile(lat, 99):.2f}" if lat else "",
            "rate_hz": f"{rate:.2f}",
            "frames_received": str(self.slot.received),
            "frames_dropped": str(self.slot.dropped),
            "consecutive_failures": str(self.consecutive_failures),
            "halted": str(bool(self.halted)).lower(),
            **{k: str(v) for k, v in self.counters.items()},
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        self.fault = None


def runtime_of(policy: PolicyAdapter) -> RuntimeSummary:
    """How the loaded model runs (runtime mode per layer, summarised), the bytes it holds, its
    floating-point dtypes and the dtype it computes in, for the log and /diagnostics: what an
    operator checks to see that a pruned artifact really runs sparse, fits, and computes in the
    dtype asked for. Computed once at configure (none of them changes while configured)."""
    import torch

    model = getattr(policy, "model", None)
    if model is None:  # an action_map wraps the adapter
        model = getattr(getattr(policy, "policy", None), "model", None)
    if not isinstance(model, torch.nn.Module):  # a user's adapter without a torch module
        return RuntimeSummary("unknown (not a torch module)", {}, int(policy.info.memory_bytes),
                              "unknown", "unknown")  # fmt: skip
    return runtime_summary(model)


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
