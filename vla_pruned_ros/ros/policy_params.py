"""The policy node's parameters: defaults, descriptors, and when each may change.

Every parameter is one of three kinds, so that `ros2 param set` never answers "successful" for a
change that does nothing:
- LIVE: read on every step (rates, age and skew limits, failure count, action scaling, output
  switches), so a change applies to the next frame;
- CONFIGURE: used to build the node at configure (topics, message types, model, device); refused
  with a reason while the node is configured (cleanup, set, configure again to change them);
- STARTUP: only read when the process starts (autostart); read-only in its descriptor.
Invalid values are refused with a reason, at start (a ValueError: the process exits with code 2)
and at runtime (`SetParametersResult(successful=False)`), by the same `check_value`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from vla_pruned_ros.compression.runtime_modes import CHOICES as RUNTIME_MODES
from vla_pruned_ros.monitor.stamps import CLOCK_SKEW_TOLERANCE_S
from vla_pruned_ros.ros import topics

LIVE, CONFIGURE, STARTUP = "live", "configure", "startup"


@dataclass(frozen=True)
class ParamSpec:
    default: bool | int | float | str
    description: str
    kind: str = LIVE
    low: float | None = None  # inclusive range, shown by `ros2 param describe`
    high: float | None = None
    positive: bool = False  # the low end itself is refused (a rate of 0)

    def descriptor(self, name: str) -> ParameterDescriptor:
        when = {
            LIVE: "applied live",
            CONFIGURE: "fixed while configured (cleanup to change)",
            STARTUP: "read at start only",
        }[self.kind]
        desc = ParameterDescriptor(
            name=name,
            description=self.description,
            read_only=self.kind == STARTUP,
            additional_constraints=when + ("; must be > 0" if self.positive else ""),
        )
        if self.low is not None and isinstance(self.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(self.low), to_value=float(self.high))
            ]
        elif self.low is not None and isinstance(self.default, int):
            desc.integer_range = [
                IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)
            ]
        return desc


PARAMS: dict[str, ParamSpec] = {
    "artifact": ParamSpec(
        "embedded", "'embedded' or the folder of a saved model / artifact", CONFIGURE
    ),
    "adapter": ParamSpec(
        "embedded",
        "embedded | openvla | lerobot | text, or a user's PolicyAdapter class as 'module:Class' "
        "(embedded: a preset the artifact's manifest names is used)",
        CONFIGURE,
    ),
    "adapter_options": ParamSpec(
        "", "the adapter's options, a YAML/JSON mapping (action_map, rules, ...)", CONFIGURE
    ),
    "unnorm_key": ParamSpec(
        "", "openvla: the dataset whose action statistics apply ('': the only one)", CONFIGURE
    ),
    "trust_remote_code": ParamSpec(
        False, "run a checkpoint's own code (remote-code models, processors)", CONFIGURE
    ),
    "task": ParamSpec(
        "nav", "which action head: nav | manip (a user's adapter: its own)", CONFIGURE
    ),
    "runtime_mode": ParamSpec(
        "auto",
        "how an artifact's pruned layers run: " + " | ".join(RUNTIME_MODES) + " (auto: sparse "
        "on CPU where the kernel serves a layer, materialize otherwise and on CUDA)",
        CONFIGURE,
    ),
    "device": ParamSpec("cpu", "torch device: cpu, cuda, cuda:N", CONFIGURE),
    # topic parameters are named for the topic's role, as on every node (topic_names.py)
    "camera_topic": ParamSpec(topics.CAMERA, "camera input (sensor_msgs/Image)", CONFIGURE),
    "instruction_topic": ParamSpec(
        topics.INSTRUCTION, "instruction input (std_msgs/String)", CONFIGURE
    ),
    "action_topic": ParamSpec(topics.ACTION, "VLAAction output", CONFIGURE),
    "cmd_raw_topic": ParamSpec(
        topics.CMD_RAW, "velocity command output, to the safety monitor", CONFIGURE
    ),
    "twist_stamped": ParamSpec(
        False, "publish geometry_msgs/TwistStamped (frame base_link) instead of Twist", CONFIGURE
    ),
    "control_rate_hz": ParamSpec(10.0, "most actions per second", LIVE, 0.0, 1000.0, True),
    "max_image_age_s": ParamSpec(
        0.5, "frames older than this are skipped (stale)", LIVE, 0.0, 3600.0, True
    ),
    "clock_skew_tolerance_s": ParamSpec(
        CLOCK_SKEW_TOLERANCE_S,
        "frames stamped further ahead of the node clock are rejected (clock_skew)",
        LIVE,
        0.0,
        10.0,
    ),
    "max_consecutive_failures": ParamSpec(
        5, "model steps failing in a row before the node halts", LIVE, 1, 10_000
    ),
    "action_limit_scale": ParamSpec(
        1.0, "actions are clipped to the model's limits times this", LIVE, 0.0, 1.0
    ),
    "publish_twist": ParamSpec(True, "also publish the velocity command", LIVE),
    "dry_run": ParamSpec(False, "compute actions but publish none", LIVE),
    "autostart": ParamSpec(
        True, "configure + activate at start; false: a lifecycle manager does", STARTUP
    ),
}


def check_value(name: str, value: object) -> str | None:
    """Why `value` is not acceptable for parameter `name`, or None. (Types and ranges are also
    enforced by rclpy from the descriptor; this adds what a descriptor cannot say.)"""
    spec = PARAMS.get(name)
    if spec is None:
        return None
    if spec.low is not None and isinstance(value, int | float) and not isinstance(value, bool):
        if not spec.low <= value <= spec.high:  # also refuses NaN
            return f"{name} must be in [{spec.low}, {spec.high}], got {value}"
        if spec.positive and value <= spec.low:
            return f"{name} must be > {spec.low}, got {value}"
    if name == "runtime_mode" and value not in RUNTIME_MODES:
        return f"runtime_mode must be one of {RUNTIME_MODES}, got {value!r}"
    if name == "device" and not (value == "cpu" or str(value).startswith("cuda")):
        return f"device must be cpu or cuda[:N], got {value!r}"
    if name.endswith("_topic") and not str(value).strip():
        return f"{name} must not be empty"
    return None
