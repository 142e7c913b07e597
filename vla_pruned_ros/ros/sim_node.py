"""Simulation node: a MuJoCo task as a robot on the ROS graph.

The simulator owns time. Every control period (scaled by `real_time_factor`) it applies the
newest command on `cmd_topic` (zero when none arrived since the last step, so a silent gate
stops the robot), advances the physics, and publishes /clock, the camera image, contacts, and
odometry + a range scan (navigation) or joint states (manipulation). Episodes start by service
(`~/start_episode`) or automatically (`episodes` > 0): each start publishes the instruction
(latched) and `start <id>` on the episode topic for the safety monitor; each end publishes
`end`. With `episodes` > 0 the node exits after the last one, writing its results.

For manipulation the node leaves out contacts with the object the instruction names: touching
that block is the task, not a violation.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState, LaserScan
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vla_pruned_ros_msgs.msg import Contacts

from vla_pruned_ros.ros import topics
from vla_pruned_ros.ros.conversions import sec_to_stamp, twist_to_action
from vla_pruned_ros.ros.image_io import rgb_to_image
from vla_pruned_ros.ros.runner import run_node
from vla_pruned_ros.sim.base import CONTROL_DT

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
            "first_seed": 1_000_000,
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
        self.create_subscription(Twist, p["cmd_topic"], self._on_cmd, 10)
        self.create_service(Trigger, "~/start_episode", self._srv_start)
        period = CONTROL_DT / float(p["real_time_factor"])
        self.create_timer(period, self._tick)  # wall time: this node is the source of /clock
        self._settle_ticks = math.ceil(float(p["settle_s"]) / period)
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
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "episodes": self.results}, indent=1))
        tmp.replace(path)
        return path

    # -- the loop ---------------------------------------------------------------------------
    def _on_cmd(self, msg: Twist) -> None:
        self.command = msg

    def _tick(self) -> None:
        if self._settle_ticks > 0:
            self._settle_ticks -= 1
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

    @property
    def now(self) -> float:
        return self.sim_offset + self.task.sim_time

    def _publish_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=sec_to_stamp(self.now)))

    def _publish_sensors(self, image: np.ndarray | None = None) -> None:
        self._publish_clock()
        stamp = sec_to_stamp(self.now)
        self.image_pub.publish(rgb_to_image(self.task.render() if image is None else image, stamp))
        contacts = Contacts()
        contacts.header.stamp = stamp
        allowed = f"block_{self.task.target}" if self.task.name == "manip" else None
        for a, b, f in self.task.contacts():
            if allowed in (a, b):
                continue
            contacts.body_a.append(a)
            contacts.body_b.append(b)
            contacts.force.append(f)
        self.contacts_pub.publish(contacts)
        if self.task.name == "nav":
            self._publish_nav(stamp)
        else:
            joints = JointState(name=["x", "y"], position=[float(v) for v in self.task.tip()])
            joints.header.stamp = stamp
            self.joints_pub.publish(joints)

    def _publish_nav(self, stamp) -> None:
        q, v = self.task.data.qpos, self.task.data.qvel
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id, odom.child_frame_id = stamp, "odom", "base"
        odom.pose.pose.position.x, odom.pose.pose.position.y = float(q[0]), float(q[1])
        odom.pose.pose.orientation.z = math.sin(q[2] / 2)
        odom.pose.pose.orientation.w = math.cos(q[2] / 2)
        odom.twist.twist.linear.x = float(math.hypot(v[0], v[1]))
        odom.twist.twist.angular.z = float(v[2])
        self.odom_pub.publish(odom)
        ranges = self.task.ranges(n=36)
        step = 2 * math.pi / len(ranges)
        scan = LaserScan(angle_min=0.0, angle_max=step * (len(ranges) - 1), angle_increment=step)
        scan.range_min, scan.range_max = 0.0, 6.0
        scan.header.stamp, scan.header.frame_id = stamp, "base"
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
