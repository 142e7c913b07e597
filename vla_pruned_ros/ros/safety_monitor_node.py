"""Safety monitor node: an independent command gate between the policy and the robot.

Like Nav2's collision monitor and twist_mux, it forwards the policy's Twist while everything is
safe and sends a zero Twist every control period while it is not (a violation, a stale command,
a stale camera, a lost policy). All judgement lives in `vla_pruned_ros.monitor.SafetyMonitor`;
this node feeds it stamped inputs and publishes what it decides.

    ros2 run vla_pruned_ros safety_monitor --ros-args --params-file config/safety_monitor.yaml
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState, LaserScan
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vla_pruned_ros_msgs.msg import Contacts, SafetyEvent, SafetyStatus, VLAAction

from vla_pruned_ros.monitor import SafetyLimits, SafetyMonitor, write_reports
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import (
    event_to_msg,
    gz_contacts_to_tuples,
    lists_to_twist,
    stamp_to_sec,
    status_to_msg,
    twist_to_lists,
)
from vla_pruned_ros.ros.runner import run_node

EPISODE_QOS = QoSProfile(
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


class SafetyMonitorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("safety_monitor", **kwargs)
        p = self._declare_parameters()
        self.limits = self._read_limits()
        self.report_dir = Path(p["report_dir"]).expanduser()
        self.robot_bodies = tuple(p["robot_bodies"])
        self.monitor = SafetyMonitor(self.limits, now=self._now(), episode_id="0")
        self._episode_counter = 0

        self.cmd_out = self.create_publisher(Twist, p["cmd_out_topic"], 10)
        self.events_pub = self.create_publisher(SafetyEvent, p["events_topic"], 50)
        self.status_pub = self.create_publisher(SafetyStatus, p["status_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)

        self.create_subscription(Twist, p["cmd_in_topic"], self._on_cmd, 10)
        self.create_subscription(Image, p["camera_topic"], self._on_image, qos_profile_sensor_data)
        self.create_subscription(VLAAction, p["action_topic"], self._on_action, 10)
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

        joints = p["joint_names"] or []
        if not len(joints) == len(p["joint_lower"] or []) == len(p["joint_upper"] or []):
            raise ValueError("joint_names, joint_lower and joint_upper must have equal lengths")
        self.joint_lower = dict(zip(joints, p["joint_lower"] or [], strict=True))
        self.joint_upper = dict(zip(joints, p["joint_upper"] or [], strict=True))
        self.create_timer(self.limits.control_period_s, self._tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._last_decision = self.monitor.decide(self._now())
        self.get_logger().info(
            f"gating {p['cmd_in_topic']} -> {p['cmd_out_topic']} at "
            f"{self.limits.control_rate_hz:g} Hz; reports in {self.report_dir}"
        )

    # -- parameters -------------------------------------------------------------------------
    def _declare_parameters(self) -> dict:
        defaults = {
            "cmd_in_topic": topics.CMD_RAW,
            "cmd_out_topic": topics.CMD,
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
            "robot_bodies": ["base"],
            "joint_names": Parameter.Type.STRING_ARRAY,
            "joint_lower": Parameter.Type.DOUBLE_ARRAY,
            "joint_upper": Parameter.Type.DOUBLE_ARRAY,
        }
        for name, value in defaults.items():
            self.declare_parameter(name, value)
        for f in fields(SafetyLimits):
            default = f.default
            if isinstance(default, tuple):
                is_str = f.name == "stop_categories"
                typed = Parameter.Type.STRING_ARRAY if is_str else Parameter.Type.DOUBLE_ARRAY
                default = list(default) if default else typed
            self.declare_parameter(f"limits.{f.name}", default)
        return {name: self._param(name) for name in defaults}

    def _param(self, name: str):
        """A parameter's value; None for a typed parameter the YAML did not set."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _read_limits(self) -> SafetyLimits:
        values = {
            name: value
            for name in self.get_parameters_by_prefix("limits")
            if (value := self._param(f"limits.{name}")) is not None
        }
        return SafetyLimits.from_mapping(values)

    # -- inputs -----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_cmd(self, msg: Twist) -> None:
        now = self._now()
        linear, angular = twist_to_lists(msg)
        self.monitor.on_command(linear, angular, now)
        decision = self.monitor.decide(now)
        self._publish_events()
        if not decision.stop:  # forward at once; stops are sent by the timer
            self.cmd_out.publish(lists_to_twist(*self.monitor.clamp(linear, angular)))
            self.monitor.record_output(False, now)

    def _on_image(self, msg: Image) -> None:
        self.monitor.on_camera(stamp_to_sec(msg.header.stamp), self._now())
        self._publish_events()

    def _on_action(self, _msg: VLAAction) -> None:
        self.monitor.on_policy_heartbeat(self._now())

    def _on_contacts(self, msg: Contacts) -> None:
        self._robot_contacts(zip(msg.body_a, msg.body_b, msg.force, strict=True))

    def _on_gz_contacts(self, msg) -> None:
        self._robot_contacts(gz_contacts_to_tuples(msg))

    def _robot_contacts(self, contacts) -> None:
        robot = [
            (a, b, f)
            for a, b, f in contacts
            if a.startswith(self.robot_bodies) or b.startswith(self.robot_bodies)
        ]
        self.monitor.on_contacts(robot, self._now())

    def _on_scan(self, msg: LaserScan) -> None:
        self.monitor.on_ranges(msg.ranges, self._now())

    def _on_odom(self, msg: Odometry) -> None:
        now = self._now()
        pos = msg.pose.pose.position
        twist = msg.twist.twist
        self.monitor.on_position([pos.x, pos.y, pos.z], now)
        speed = (twist.linear.x**2 + twist.linear.y**2 + twist.linear.z**2) ** 0.5
        self.monitor.on_measured_speed(speed, abs(twist.angular.z), now)

    def _on_joints(self, msg: JointState) -> None:
        names = [n for n in msg.name if n in self.joint_lower]
        index = {n: i for i, n in enumerate(msg.name)}
        self.monitor.on_joints(
            names,
            [msg.position[index[n]] for n in names],
            [self.joint_lower[n] for n in names],
            [self.joint_upper[n] for n in names],
            self._now(),
        )

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
        if decision.stop:
            self.cmd_out.publish(Twist())
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
        ] + [KeyValue(key=c, value=str(n)) for c, n in ep.counts.items() if n]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


def _save_reports(node: SafetyMonitorNode) -> None:
    print(f"safety report: {node.write_reports()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_node(SafetyMonitorNode, argv, on_shutdown=_save_reports)


if __name__ == "__main__":
    sys.exit(main())
