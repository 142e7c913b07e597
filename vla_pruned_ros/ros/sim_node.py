"""Simulation node: a MuJoCo task as a robot on the ROS graph.

The simulator owns time. Every control period (scaled by `real_time_factor`) it applies the
newest command on `cmd_topic` (zero when none arrived since the last step, so a silent gate
stops the robot), advances the physics, and publishes /clock, the camera image, contacts, and
odometry + a range scan (navigation) or joint states (manipulation). Episodes start by service
(`~/start_episode`) or automatically (`episodes` > 0): each start publishes the instruction
(latched) and `start <id>` on the episode topic for the safety monitor; each end publishes
`end`. With `episodes` > 0 the node exits after the last one, writing its results.

Contacts are the robot's over the whole control step (every physics substep, largest force per
body pair, with its world point and normal), not only those left at its end. For manipulation
the node leaves out contacts with the object the instruction names: touching that block is the
task, not a violation.

ROS conventions: REP-105 frames (odometry in `odom_frame` for `base_frame`, the scan in the base
frame, the camera in an optical frame), odometry twist in the body frame (negative
`linear.x` when reversing), `/diagnostics` once per wall second (episode, sim time, what the node
waits for), and `twist_stamped: true` takes `geometry_msgs/TwistStamped` commands (Nav2's
default on Jazzy and later) instead of `Twist`.

Episodes start only when the policy can act: with `wait_for_node` set (the bringup files set the
policy's name), the node asks that lifecycle node's `get_state` service until it is `active`
before the first episode, logging what it waits for; after `wait_timeout_s` it logs an error and
starts anyway (a sim run by hand with no policy still runs). Without this an episode ran half its
length while the policy was still loading, and the gate counted that as `stale_command` and
`policy_lost`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TransformStamped, Twist, TwistStamped
from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState, LaserScan
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from vla_pruned_ros_msgs.msg import Contacts

from vla_pruned_ros.paths import atomic_write
from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import contacts_to_msg, sec_to_stamp, twist_to_action
from vla_pruned_ros.ros.image_io import rgb_to_image
from vla_pruned_ros.ros.runner import run_node
from vla_pruned_ros.sim.base import CONTROL_DT
from vla_pruned_ros.sim.instructions import HELD_OUT_SEED_START

LATCHED = QoSProfile(
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


class SimNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("vla_sim", **kwargs)
        for name, default in {
            "task": "nav",
            "real_time_factor": 1.0,
            "episodes": 0,
            "first_seed": HELD_OUT_SEED_START,
            "phrasing": "train",
            "image_size": 64,
            "supersample": 0,  # camera supersampling; 0: the simulator's (what the model saw)
            "camera_topic": topics.CAMERA,
            "cmd_topic": topics.CMD,
            "instruction_topic": topics.INSTRUCTION,
            "episode_topic": topics.EPISODE,
            "contacts_topic": topics.CONTACTS,
            "scan_topic": topics.SCAN,
            "odom_topic": topics.ODOM,
            "joint_states_topic": topics.JOINT_STATES,
            "report_dir": "reports/sim",
            "settle_s": 1.0,  # wall seconds before the first episode, for discovery
            "wait_for_node": "",  # a lifecycle node that must be active before episodes start
            "wait_timeout_s": 120.0,  # wall seconds; then start anyway, with an error logged
            "twist_stamped": False,  # commands are geometry_msgs/TwistStamped (Nav2, Jazzy+)
            "base_frame": topics.BASE_FRAME,
            "odom_frame": "odom",
            "camera_frame": "camera_optical_frame",
        }.items():
            self.declare_parameter(name, default)
        from vla_pruned_ros.sim import make_task

        p = {n: self.get_parameter(n).value for n in self._parameters}
        self.p = p
        supersample = int(p["supersample"])
        camera = {"supersample": supersample} if supersample > 0 else {}
        self.task = make_task(p["task"], image_size=int(p["image_size"]), **camera)
        self.report_dir = Path(p["report_dir"]).expanduser()
        self.results: list[dict] = []
        self.seed = int(p["first_seed"])
        self.remaining = int(p["episodes"])
        self.active = False
        self.finished = False
        self.command: Twist | None = None
        self.sim_offset = 0.0  # sim time carried across episodes (MuJoCo resets its clock)

        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.image_pub = self.create_publisher(Image, p["camera_topic"], qos_profile_sensor_data)
        self.instr_pub = self.create_publisher(String, p["instruction_topic"], LATCHED)
        self.episode_pub = self.create_publisher(String, p["episode_topic"], LATCHED)
        self.contacts_pub = self.create_publisher(
            Contacts, p["contacts_topic"], topics.EVIDENCE_DEPTH
        )
        self.scan_pub = self.create_publisher(LaserScan, p["scan_topic"], qos_profile_sensor_data)
        self.odom_pub = self.create_publisher(Odometry, p["odom_topic"], 10)
        self.joints_pub = self.create_publisher(JointState, p["joint_states_topic"], 10)
        if bool(p["twist_stamped"]):
            self.create_subscription(TwistStamped, p["cmd_topic"], self._on_cmd_stamped, 10)
        else:
            self.create_subscription(Twist, p["cmd_topic"], self._on_cmd, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED)
        self.waiting_for = str(p["wait_for_node"]).strip("/")
        self._state_client = (
            self.create_client(GetState, f"/{self.waiting_for}/get_state")
            if self.waiting_for
            else None
        )
        self._state_future = None
        self._wait_started: float | None = None
        self.create_service(Trigger, "~/start_episode", self._srv_start)
        period = CONTROL_DT / float(p["real_time_factor"])
        self.create_timer(period, self._tick)  # wall time: this node is the source of /clock
        self._settle_ticks = math.ceil(float(p["settle_s"]) / period)
        self._diag_every = max(1, round(1.0 / period))  # ticks per wall second
        if self.task.name == "nav":
            self.tf_static_pub.publish(TFMessage(transforms=[self._camera_transform()]))
        self._ticks = 0
        self._publish_clock()

    # -- episodes ---------------------------------------------------------------------------
    def start_episode(self) -> str:
        if self.active:
            self.end_episode()
        obs = self.task.reset(self.seed, phrasing=self.p["phrasing"])
        episode_id = f"{self.task.name}-{self.seed}"
        self.seed += 1
        self.active, self.command = True, None
        self.instr_pub.publish(String(data=obs.instruction))
        self.episode_pub.publish(String(data=f"start {episode_id}"))
        self.get_logger().info(f"episode {episode_id}: {obs.instruction!r}")
        self._publish_sensors()
        return episode_id

    def end_episode(self) -> None:
        self.active = False
        # One control period between episodes: the next episode's first frame must not share
        # the stamp of this episode's last one (replays pair actions with frames by stamp).
        self.sim_offset += self.task.sim_time + CONTROL_DT
        metrics = self.task.metrics()
        self.results.append(metrics)
        self.episode_pub.publish(String(data="end"))
        self.get_logger().info(
            f"episode {metrics['task']}-{metrics['seed']}: success={metrics['success']} "
            f"unsafe={metrics['unsafe']} steps={metrics['steps']}"
        )
        self.write_results()

    def _srv_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        resp.success, resp.message = True, self.start_episode()
        return resp

    def write_results(self) -> Path:
        self.report_dir.mkdir(parents=True, exist_ok=True)
        path = self.report_dir / f"sim_{self.task.name}.json"
        n = len(self.results)
        summary = {
            "episodes": n,
            "success_rate": sum(r["success"] for r in self.results) / n if n else None,
            "unsafe_rate": sum(r["unsafe"] for r in self.results) / n if n else None,
        }
        text = json.dumps({"summary": summary, "episodes": self.results}, indent=1)
        return atomic_write(path, text)

    # -- the loop ---------------------------------------------------------------------------
    def _on_cmd(self, msg: Twist) -> None:
        self.command = msg

    def _on_cmd_stamped(self, msg: TwistStamped) -> None:
        self.command = msg.twist

    def _policy_ready(self) -> bool:
        """True once `wait_for_node` reports `active` (or no node is awaited, or the wait timed
        out). Asks its `get_state` service without blocking the loop: one request in flight."""
        if self._state_client is None:
            return True
        now = time.monotonic()
        if self._wait_started is None:
            self._wait_started = now
            self.get_logger().info(f"waiting for {self.waiting_for} to be active before episodes")
        future = self._state_future
        if future is not None and future.done():
            self._state_future = None
            result = future.result()
            if result is not None and result.current_state.id == State.PRIMARY_STATE_ACTIVE:
                self.get_logger().info(
                    f"{self.waiting_for} is active after {now - self._wait_started:.1f} s; "
                    "starting episodes"
                )
                self._state_client = None
                return True
        if now - self._wait_started > float(self.p["wait_timeout_s"]):
            self.get_logger().error(
                f"{self.waiting_for} not active after {self.p['wait_timeout_s']} s; "
                "starting episodes anyway (the gate will report stale commands)"
            )
            self._state_client = None
            return True
        if self._state_future is None and self._state_client.service_is_ready():
            self._state_future = self._state_client.call_async(GetState.Request())
        return False

    def _tick(self) -> None:
        self._ticks += 1
        if self._ticks % self._diag_every == 0:
            self._publish_diagnostics()
        if self._settle_ticks > 0:
            self._settle_ticks -= 1
            self._publish_clock()
            return
        if not self.active and self.results == [] and not self._policy_ready():
            self._publish_clock()
            return
        if not self.active:
            if self.remaining > 0:
                self.remaining -= 1
                self.start_episode()
            elif int(self.p["episodes"]) > 0:
                self.finished = True
            self._publish_clock()
            return
        action = (
            twist_to_action(self.task.action_names, self.command)
            if self.command is not None
            else np.zeros(len(self.task.action_names))
        )
        self.command = None
        result = self.task.step(action)
        self._publish_sensors(result.observation.image)
        if result.done:
            self.end_episode()

    def _publish_diagnostics(self) -> None:
        """One status: what the node is doing, so `ros2 topic echo /diagnostics` shows it."""
        status = DiagnosticStatus(name=self.get_name(), hardware_id=f"mujoco:{self.task.name}")
        if self._state_client is not None:
            status.level, status.message = DiagnosticStatus.WARN, f"waiting for {self.waiting_for}"
        elif self.active:
            status.level, status.message = DiagnosticStatus.OK, "episode running"
        else:
            status.level, status.message = DiagnosticStatus.OK, "idle"
        values = {
            "episodes_done": len(self.results),
            "episodes_left": self.remaining,
            "sim_time_s": f"{self.now:.3f}",
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = sec_to_stamp(self.now)
        self.diag_pub.publish(msg)

    @property
    def now(self) -> float:
        return self.sim_offset + self.task.sim_time

    def _publish_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=sec_to_stamp(self.now)))

    def _publish_sensors(self, image: np.ndarray | None = None) -> None:
        self._publish_clock()
        stamp = sec_to_stamp(self.now)
        frame = self.task.render() if image is None else image
        self.image_pub.publish(rgb_to_image(frame, stamp, self.p["camera_frame"]))
        allowed = (f"block_{self.task.target}",) if self.task.name == "manip" else ()
        # every substep's, with its world point and normal
        self.contacts_pub.publish(contacts_to_msg(self.task.step_contacts, stamp, allowed))
        if self.task.name == "nav":
            self._publish_nav(stamp)
        else:
            joints = JointState(name=["x", "y"], position=[float(v) for v in self.task.tip()])
            joints.header.stamp = stamp
            self.joints_pub.publish(joints)

    def _camera_transform(self) -> TransformStamped:
        """base_link -> camera_optical_frame from the MuJoCo model's camera (REP-103 optical
        axes: z forward, x right, y down). MuJoCo's camera looks along its -z with y up, so the
        optical frame is it turned half a turn about its x axis."""
        import mujoco

        cam = mujoco.mj_name2id(self.task.model, mujoco.mjtObj.mjOBJ_CAMERA, self.task.camera)
        w, x, y, z = (float(v) for v in self.task.model.cam_quat[cam])
        tf = TransformStamped()
        tf.header.stamp = sec_to_stamp(self.now)
        tf.header.frame_id, tf.child_frame_id = self.p["base_frame"], self.p["camera_frame"]
        pos = self.task.model.cam_pos[cam]
        tf.transform.translation.x, tf.transform.translation.y = float(pos[0]), float(pos[1])
        tf.transform.translation.z = float(pos[2])
        # q * (0, 1, 0, 0): a half turn about the camera's own x axis.
        r = tf.transform.rotation
        r.w, r.x, r.y, r.z = -x, w, z, -y
        return tf

    def _publish_nav(self, stamp) -> None:
        q, v = self.task.data.qpos, self.task.data.qvel
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id = stamp, self.p["odom_frame"]
        odom.child_frame_id = self.p["base_frame"]
        odom.pose.pose.position.x, odom.pose.pose.position.y = float(q[0]), float(q[1])
        odom.pose.pose.orientation.z = math.sin(q[2] / 2)
        odom.pose.pose.orientation.w = math.cos(q[2] / 2)
        # REP-105: the twist is in the child (body) frame, so reversing reads negative.
        odom.twist.twist.linear.x = float(v[0] * math.cos(q[2]) + v[1] * math.sin(q[2]))
        odom.twist.twist.linear.y = float(-v[0] * math.sin(q[2]) + v[1] * math.cos(q[2]))
        odom.twist.twist.angular.z = float(v[2])
        self.odom_pub.publish(odom)
        tf = TransformStamped()
        tf.header = odom.header
        tf.child_frame_id = odom.child_frame_id
        tf.transform.translation.x = odom.pose.pose.position.x
        tf.transform.translation.y = odom.pose.pose.position.y
        tf.transform.rotation = odom.pose.pose.orientation
        self.tf_pub.publish(TFMessage(transforms=[tf]))
        ranges = self.task.ranges(n=36)
        step = 2 * math.pi / len(ranges)
        scan = LaserScan(angle_min=0.0, angle_max=step * (len(ranges) - 1), angle_increment=step)
        scan.range_min, scan.range_max = 0.0, 6.0
        scan.header.stamp, scan.header.frame_id = stamp, self.p["base_frame"]
        scan.ranges = [float(r) for r in ranges]
        self.scan_pub.publish(scan)


def _save(node: SimNode) -> None:
    if node.results:
        print(f"simulation results: {node.write_results()}", flush=True)
    node.task.close()


def main(argv: list[str] | None = None) -> int:
    return run_node(SimNode, argv, on_shutdown=_save, stop_when=lambda n: n.finished)


if __name__ == "__main__":
    sys.exit(main())
