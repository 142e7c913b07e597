"""Safety monitor node: an independent command gate between the policy and the robot.

Like Nav2's collision monitor and twist_mux, it forwards the policy's Twist while everything is
safe and sends a zero Twist every control period while it is not (a violation, a stale command,
a stale camera, a lost policy). All judgement lives in `vla_pruned_ros.monitor.SafetyMonitor`;
this node feeds it stamped inputs and publishes what it decides.

It is the last node of a graph to stop: when the policy dies it keeps sending zero commands
(`stale_command` / `policy_lost`) until it is told to stop, and on SIGINT/SIGTERM it publishes
one more zero command (and waits for it to be acknowledged) before it exits.

Parameters change safely at runtime: every `limits.*` value, `robot_bodies`, the joint limits and
`pose_joints` (the joints that give the pose of a robot without odometry) apply live (the limits
are rebuilt and swapped; a `control_rate_hz` change recreates the control timer); topics and
`report_dir` are read-only. A value that would make invalid limits is refused
with the reason (`ros2 param set` prints it), and `ros2 param describe` shows each range.

A lifecycle node, like Nav2's collision monitor: only while active does it forward commands and
send stop commands; deactivating sends one zero command first. With `autostart` (default true)
it configures and activates itself, so it runs without a lifecycle manager; with
`autostart:=false` it waits for `ros2 lifecycle set /safety_monitor configure` / `activate`.
Its publishers and subscriptions exist from construction; `configure` (re)builds the limits and
the monitor from the parameters, `cleanup` drops the monitor's state.

    ros2 run vla_pruned_ros safety_monitor_node --ros-args \
        --params-file config/safety_monitor_nav.yaml
"""

from __future__ import annotations

import math
import sys
from dataclasses import fields
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState, LaserScan
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vla_pruned_ros_msgs.msg import Contacts, SafetyEvent, SafetyStatus, VLAAction

from vla_pruned_ros.monitor import SafetyLimits, SafetyMonitor, write_reports
from vla_pruned_ros.monitor.categories import CATEGORIES
from vla_pruned_ros.monitor.detectors import robot_contact_geometry
from vla_pruned_ros.monitor.limits import RANGES
from vla_pruned_ros.monitor.zones import ZoneConfig, scan_angles
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import (
    contacts_from_msg,
    event_to_msg,
    gz_contacts_to_tuples,
    lists_to_twist,
    stamp_to_sec,
    status_to_msg,
    twist_to_lists,
)
from vla_pruned_ros.ros.params import renamed_defaults
from vla_pruned_ros.ros.runner import run_node

EPISODE_QOS = QoSProfile(
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


LIVE_PARAMETERS = frozenset(
    {"robot_bodies", "joint_names", "joint_lower", "joint_upper", "pose_joints"}
)
"""Parameters besides `limits.*` that apply at runtime; every other one is read-only."""
JOINT_PARAMETERS = ("joint_names", "joint_lower", "joint_upper")


class SafetyMonitorNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("safety_monitor", **kwargs)
        self.active = False  # lifecycle state "active": forward commands and send stops
        p = self._declare_parameters()
        self.limits = self._read_limits()
        self.report_dir = Path(p["report_dir"]).expanduser()
        self.robot_bodies = tuple(p["robot_bodies"])
        self.pose_joints = _pose_joints(p["pose_joints"])
        self.zones = self._declare_zones()
        self.monitor = self._new_monitor()
        self._episode_counter = 0

        self.twist_stamped = bool(p["twist_stamped"])
        cmd_type = TwistStamped if self.twist_stamped else Twist
        self.cmd_out = self.create_publisher(cmd_type, p["cmd_topic"], 10)
        self.events_pub = self.create_publisher(SafetyEvent, p["events_topic"], 50)
        self.status_pub = self.create_publisher(SafetyStatus, p["status_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)

        self.create_subscription(cmd_type, p["cmd_raw_topic"], self._on_cmd, 10)
        self.create_subscription(Image, p["camera_topic"], self._on_image, qos_profile_sensor_data)
        self.create_subscription(VLAAction, p["action_topic"], self._on_action, 10)
        # Where the last pose came from ("odom" or "pose_joints"; "" before one): contacts are
        # placed by their world points only with a pose, and /diagnostics says which it is.
        self._pose_source = ""
        self.create_subscription(
            Contacts, p["contacts_topic"], self._on_contacts, topics.EVIDENCE_DEPTH
        )
        if p["gz_contacts_topic"]:
            try:
                from ros_gz_interfaces.msg import Contacts as GzContacts
            except ImportError as err:
                raise ValueError(
                    "gz_contacts_topic is set but ros_gz_interfaces is not installed "
                    "(apt install ros-$ROS_DISTRO-ros-gz-interfaces)"
                ) from err
            self.create_subscription(
                GzContacts, p["gz_contacts_topic"], self._on_gz_contacts, topics.EVIDENCE_DEPTH
            )
        self.create_subscription(LaserScan, p["scan_topic"], self._on_scan, qos_profile_sensor_data)
        self.create_subscription(Odometry, p["odom_topic"], self._on_odom, 10)
        self.create_subscription(JointState, p["joint_states_topic"], self._on_joints, 10)
        self.create_subscription(String, p["episode_topic"], self._on_episode, EPISODE_QOS)
        self.create_service(Trigger, "~/start_episode", self._srv_start)
        self.create_service(Trigger, "~/end_episode", self._srv_end)

        self._read_joint_limits()
        self._control_timer = self.create_timer(self.limits.control_period_s, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._last_decision = self.monitor.decide(self._now())
        self.get_logger().info(
            f"gating {p['cmd_raw_topic']} -> {p['cmd_topic']} at "
            f"{self.limits.control_rate_hz:g} Hz; reports in {self.report_dir}"
        )
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        if p["autostart"]:
            self.trigger_configure()
            self.trigger_activate()

    # -- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.limits = self._read_limits()
        except ValueError as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        if self.monitor.limits != self.limits:
            self.monitor.limits = self.limits
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info("active: gating commands")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.publish_final_stop()
        self.active = False
        self.get_logger().info("inactive: sent a zero command; no longer forwarding")
        return TransitionCallbackReturn.SUCCESS

    def _new_monitor(self) -> SafetyMonitor:
        """The gate for this node: it expects the camera and the policy heartbeat it subscribes
        to, so a topic that never delivers stops the robot (set its timeout to 0 to run without
        one) instead of leaving its check silently off."""
        return SafetyMonitor(
            self.limits,
            now=self._now(),
            episode_id="0",
            zones=self.zones,
            expected=("camera", "policy"),
        )

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.monitor = self._new_monitor()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self.publish_final_stop()
        self.active = False
        return TransitionCallbackReturn.SUCCESS

    # -- parameters -------------------------------------------------------------------------
    def _declare_parameters(self) -> dict:
        defaults = {  # topic parameters are named for the topic's role, as on every node
            "cmd_raw_topic": topics.CMD_RAW,  # in, from the policy (was cmd_in_topic)
            "cmd_topic": topics.CMD,  # out, to the robot (was cmd_out_topic)
            "camera_topic": topics.CAMERA,
            "action_topic": topics.ACTION,
            "contacts_topic": topics.CONTACTS,
            "gz_contacts_topic": "",  # ros_gz_interfaces/Contacts (Gazebo); empty: not used
            "scan_topic": topics.SCAN,
            "odom_topic": topics.ODOM,
            "joint_states_topic": topics.JOINT_STATES,
            "episode_topic": topics.EPISODE,
            "events_topic": topics.SAFETY_EVENTS,
            "status_topic": topics.SAFETY_STATUS,
            "report_dir": "reports/safety",
            # geometry_msgs/TwistStamped in and out (frame base_link; Jazzy/Kilted Nav2's
            # default) instead of Twist; a stamped command's age counts from its stamp
            "twist_stamped": False,
            # configure and activate at start (no lifecycle manager needed)
            "autostart": True,
            "robot_bodies": ["base"],
            "joint_names": Parameter.Type.STRING_ARRAY,
            "joint_lower": Parameter.Type.DOUBLE_ARRAY,
            "joint_upper": Parameter.Type.DOUBLE_ARRAY,
            # joints whose positions are the robot's planar pose in the contacts' world frame:
            # [x, y] or [x, y, yaw] (the tabletop pusher's slide joints); unset: odometry
            "pose_joints": Parameter.Type.STRING_ARRAY,
        }
        defaults = renamed_defaults(self, "safety_monitor_node", defaults)  # old names, once
        for name, value in defaults.items():
            live = name in LIVE_PARAMETERS
            why = "applied live" if live else "read-only: set it at startup"
            self._declare(name, value, ParameterDescriptor(description=why, read_only=not live))
        for f in fields(SafetyLimits):
            default = f.default
            descriptor = ParameterDescriptor(description="safety limit, applied live")
            if isinstance(default, tuple):
                is_str = f.name == "stop_categories"
                typed = Parameter.Type.STRING_ARRAY if is_str else Parameter.Type.DOUBLE_ARRAY
                default = list(default) if default else typed
                if is_str:
                    descriptor.additional_constraints = f"each one of {', '.join(CATEGORIES)}"
            else:
                lo, hi = RANGES[f.name]
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=lo, to_value=hi, step=0.0)
                ]
            self._declare(f"limits.{f.name}", default, descriptor)
        return {name: self._param(name) for name in defaults}

    def _declare_zones(self) -> ZoneConfig:
        """`zones.*`: the direction-aware collision zones (monitor/zones.py), read at start."""
        ranges = {"slowdown_ratio": 1.0, "contact_memory_s": 3600.0}
        for f in fields(ZoneConfig):
            descriptor = ParameterDescriptor(
                description="collision zone (monitor/zones.py), read at start", read_only=True
            )
            if not isinstance(f.default, bool):
                top = ranges.get(f.name, 10.0)
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=0.0, to_value=top, step=0.0)
                ]
            self.declare_parameter(f"zones.{f.name}", f.default, descriptor)
        names = self.get_parameters_by_prefix("zones")
        return ZoneConfig.from_mapping({n: self._param(f"zones.{n}") for n in names})

    def _declare(self, name: str, default, descriptor: ParameterDescriptor) -> None:
        """Declare one parameter; a start-up value it refuses (out of range, wrong type) is a
        ValueError, so the node exits with one clear line instead of a traceback."""
        try:
            self.declare_parameter(name, default, descriptor)
        except Exception as err:  # rclpy's parameter exceptions share no useful base class
            raise ValueError(f"parameter {name}: {err}") from err

    def _check_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse a runtime change that would leave the gate invalid (rclpy has already checked
        ranges, types and read-only flags); the reason reaches `ros2 param set`."""
        values = {p.name: p.value for p in params}
        prefix = "limits."
        limits = {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}
        try:
            self._read_limits(limits)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        joints = [values.get(k, self._param(k)) or [] for k in JOINT_PARAMETERS]
        if not len(joints[0]) == len(joints[1]) == len(joints[2]):
            reason = "joint_names, joint_lower and joint_upper must have equal lengths"
            return SetParametersResult(successful=False, reason=reason)
        if "pose_joints" in values:
            try:
                _pose_joints(values["pose_joints"])
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Swap in what `_check_parameters` accepted: new limits, a new control timer for a rate
        change, the robot's bodies and joint limits."""
        names = {p.name for p in params}
        old, new = self.limits, self._read_limits()
        if new != old:
            self.limits = self.monitor.limits = new
            changed = [
                f"{f.name} {getattr(old, f.name)} -> {getattr(new, f.name)}"
                for f in fields(SafetyLimits)
                if getattr(old, f.name) != getattr(new, f.name)
            ]
            self.get_logger().info(f"limits changed: {'; '.join(changed)}")
        if new.control_rate_hz != old.control_rate_hz:
            self.destroy_timer(self._control_timer)
            self._control_timer = self.create_timer(new.control_period_s, self._tick)
        if "robot_bodies" in names:
            self.robot_bodies = tuple(self._param("robot_bodies") or ())
        if names & set(JOINT_PARAMETERS):
            self._read_joint_limits()
        if "pose_joints" in names:  # contacts are unplaced until a pose from the new source
            self.pose_joints = _pose_joints(self._param("pose_joints"))
            self._pose_source = ""

    def _param(self, name: str):
        """A parameter's value; None for a typed parameter the YAML did not set."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _read_limits(self, changes: dict | None = None) -> SafetyLimits:
        """The limits the parameters describe, with `changes` (name -> value) applied."""
        values = {
            name: value
            for name in self.get_parameters_by_prefix("limits")
            if (value := self._param(f"limits.{name}")) is not None
        }
        return SafetyLimits.from_mapping({**values, **(changes or {})})

    def _read_joint_limits(self) -> None:
        joints, lower, upper = (self._param(k) or [] for k in JOINT_PARAMETERS)
        if not len(joints) == len(lower) == len(upper):
            raise ValueError("joint_names, joint_lower and joint_upper must have equal lengths")
        self.joint_lower = dict(zip(joints, lower, strict=True))
        self.joint_upper = dict(zip(joints, upper, strict=True))

    # -- inputs -----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_cmd(self, msg: Twist | TwistStamped) -> None:
        now = self._now()
        stamped = isinstance(msg, TwistStamped)
        linear, angular = twist_to_lists(msg.twist if stamped else msg)
        # judged by its stamp once there is a clock (sim time starts at the first /clock)
        stamp = stamp_to_sec(msg.header.stamp) if stamped and now > 0.0 else None
        accepted = self.monitor.on_command(linear, angular, now, stamp=stamp)
        decision = self.monitor.decide(now)
        self._publish_events()
        if self.active and accepted and not decision.stop:  # at once; the timer sends stops
            self.cmd_out.publish(self._command(*self.monitor.clamp(linear, angular)))
            self.monitor.record_output(False, now)

    def _command(self, linear: list[float], angular: list[float]) -> Twist | TwistStamped:
        """The outgoing command in the configured type (stamped now, in the base frame)."""
        twist = lists_to_twist(linear, angular)
        if not self.twist_stamped:
            return twist
        msg = TwistStamped(twist=twist)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = topics.BASE_FRAME
        return msg

    def _on_image(self, msg: Image) -> None:
        now = self._now()
        if now == 0.0:  # sim time before the first /clock: no clock to judge the stamp against
            return
        self.monitor.on_camera(stamp_to_sec(msg.header.stamp), now)
        self._publish_events()

    def _on_action(self, _msg: VLAAction) -> None:
        self.monitor.on_policy_heartbeat(self._now())

    def _on_contacts(self, msg: Contacts) -> None:
        # Points and normals are in the world (odom) frame: they place a contact for the zones
        # only with the pose that links it to the robot (odometry, or the `pose_joints` of the
        # tabletop pusher, which publishes joint states only); before a pose each contact is
        # placed along the motion instead.
        contacts, points, normals = contacts_from_msg(msg, self.robot_bodies)
        if not self._pose_source:
            points = normals = None
        self.monitor.on_contacts(contacts, self._now(), points=points, normals=normals)

    def _on_gz_contacts(self, msg) -> None:
        contacts, _, _ = robot_contact_geometry(gz_contacts_to_tuples(msg), self.robot_bodies)
        self.monitor.on_contacts(contacts, self._now())

    def _on_scan(self, msg: LaserScan) -> None:
        angles = scan_angles(msg.angle_min, msg.angle_increment, len(msg.ranges))
        self.monitor.on_ranges(list(msg.ranges), self._now(), angles=angles)

    def _on_odom(self, msg: Odometry) -> None:
        now = self._now()
        pos = msg.pose.pose.position
        twist = msg.twist.twist
        self.monitor.on_position([pos.x, pos.y, pos.z], now)
        q = msg.pose.pose.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        self.monitor.on_pose(pos.x, pos.y, yaw)
        self._pose_source = "odom"
        speed = (twist.linear.x**2 + twist.linear.y**2 + twist.linear.z**2) ** 0.5
        self.monitor.on_measured_speed(speed, abs(twist.angular.z), now)

    def _on_joints(self, msg: JointState) -> None:
        names = [n for n in msg.name if n in self.joint_lower]
        index = {n: i for i, n in enumerate(msg.name)}
        if self.pose_joints and all(n in index for n in self.pose_joints):
            self._on_joint_pose([msg.position[index[n]] for n in self.pose_joints])
        self.monitor.on_joints(
            names,
            [msg.position[index[n]] for n in names],
            [self.joint_lower[n] for n in names],
            [self.joint_upper[n] for n in names],
            self._now(),
        )

    def _on_joint_pose(self, values: list[float]) -> None:
        """The pose from `pose_joints`: slide joints whose zero is the world origin (the
        pusher's body sits at the origin of the MJCF world, so its x/y joints are its world
        x/y, the frame of the contact points), plus an optional yaw joint."""
        x, y = values[0], values[1]
        yaw = values[2] if len(values) > 2 else 0.0
        self.monitor.on_position([x, y], self._now())
        self.monitor.on_pose(x, y, yaw)
        self._pose_source = "pose_joints"

    # -- episodes ---------------------------------------------------------------------------
    def _on_episode(self, msg: String) -> None:
        words = msg.data.split()
        if words[:1] == ["start"]:
            self.start_episode(words[1] if len(words) > 1 else None)
        elif words[:1] == ["end"]:
            self.end_episode()
        else:
            self.get_logger().warning(f"ignoring episode command {msg.data!r} (start [id] | end)")

    def start_episode(self, episode_id: str | None = None) -> str:
        self._episode_counter += 1
        episode_id = episode_id or str(self._episode_counter)
        if self.monitor.start_episode(episode_id, self._now()) is not None:
            self.write_reports()
        return episode_id

    def end_episode(self) -> None:
        if self.monitor.episode_active:
            report = self.monitor.end_episode(self._now())
            self.write_reports()
            self.get_logger().info(
                f"episode {report.episode_id}: {report.total_violations} violations, "
                f"unsafe={report.unsafe}"
            )

    def _srv_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        resp.success, resp.message = True, self.start_episode()
        return resp

    def _srv_end(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.end_episode()
        resp.success, resp.message = True, self.monitor.episode.episode_id
        return resp

    def write_reports(self) -> Path:
        return write_reports(self.monitor.all_episodes(), self.report_dir)

    # -- outputs ----------------------------------------------------------------------------
    def _tick(self) -> None:
        now = self._now()
        decision = self.monitor.decide(now)
        if decision.stop and self.active:  # inactive: the gate sends nothing (Nav2)
            self.cmd_out.publish(self._command([0.0] * 3, [0.0] * 3))
            self.monitor.record_output(True, now)
            if not self._last_decision.stop:
                self.get_logger().warning(f"STOP: {decision.reason}")
        elif self._last_decision.stop:
            self.get_logger().info("gate open: commands pass")
        self._last_decision = decision
        self._publish_events()
        self.status_pub.publish(
            status_to_msg(self.monitor.episode, self.monitor.episode_active, decision, now)
        )

    def publish_final_stop(self, timeout_s: float = 1.0) -> bool:
        """Send one zero command and wait (up to `timeout_s`) until every subscriber has it:
        the last word of a stopping gate is "stop", whatever the policy said before."""
        self.cmd_out.publish(self._command([0.0] * 3, [0.0] * 3))
        self.monitor.record_output(True, self._now())
        return self.cmd_out.wait_for_all_acked(Duration(seconds=timeout_s))

    def _publish_events(self) -> None:
        for event in self.monitor.pop_events():
            self.events_pub.publish(event_to_msg(event))
            self.get_logger().warning(f"{event.category}: {event.key} {event.text}")

    def _publish_diagnostics(self) -> None:
        ep, decision = self.monitor.episode, self._last_decision
        status = DiagnosticStatus(name="vla_pruned_ros: safety_monitor", hardware_id="gate")
        status.level = DiagnosticStatus.WARN if decision.stop else DiagnosticStatus.OK
        status.message = f"STOP ({decision.reason})" if decision.stop else "passing"
        status.values = [
            KeyValue(key="episode", value=ep.episode_id),
            KeyValue(key="violations", value=str(ep.total_violations)),
            KeyValue(key="unsafe", value=str(ep.unsafe)),
            # Without a pose a contact is placed along the motion, not at its world point.
            KeyValue(key="pose", value=self._pose_source or "none (contacts placed along motion)"),
        ] + [KeyValue(key=c, value=str(n)) for c, n in ep.counts.items() if n]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def _pose_joints(names: list[str] | None) -> tuple[str, ...]:
    """`pose_joints` checked: none (odometry gives the pose), [x, y] or [x, y, yaw]."""
    names = tuple(names or ())
    if len(names) not in (0, 2, 3) or len(set(names)) != len(names):
        raise ValueError(
            f"pose_joints must name 2 or 3 distinct joints (x, y[, yaw]) or none, got {names}"
        )
    return names


def _on_shutdown(node: SafetyMonitorNode) -> None:
    acked = node.publish_final_stop()
    print(f"final zero command sent{'' if acked else ' (not acknowledged)'}", flush=True)
    print(f"safety report: {node.write_reports()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_node(SafetyMonitorNode, argv, on_shutdown=_on_shutdown)


if __name__ == "__main__":
    sys.exit(main())
