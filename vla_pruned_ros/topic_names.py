"""Default topic names: the one place they are spelled, ROS-free so that offline evaluation,
calibration and the bag tools read the same facts as the nodes. Nodes take them as parameters
(so a robot can remap); the config YAMLs repeat them for a user to read and edit, and
`test/test_topic_names.py` holds every YAML topic parameter equal to the constant here."""

from __future__ import annotations

CAMERA = "camera/image_raw"
INSTRUCTION = "instruction"
ACTION = "vla/action"  # VLAAction, from the policy node
CMD_RAW = "cmd_vel_raw"  # the policy's Twist, before the safety gate
CMD = "cmd_vel"  # gated Twist, to the robot
CONTACTS = "contacts"
GZ_CONTACTS = "gz_contacts"  # Gazebo's contacts as bridged (gz_bridge.yaml, safety_gazebo.yaml)
# Queue depth for safety evidence (contacts): a contact lasts one control step, so one message
# dropped by a lagging monitor hides a collision, or merges two into one.
EVIDENCE_DEPTH = 100
SCAN = "scan"
ODOM = "odom"
JOINT_STATES = "joint_states"
EPISODE = "episode"  # std_msgs/String: "start <id>" or "end"
SAFETY_EVENTS = "safety/events"
SAFETY_STATUS = "safety/status"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"
BASE_FRAME = "base_link"  # REP-105 frame of velocity commands (TwistStamped)


def absolute(topic: str) -> str:
    """`camera/image_raw` -> `/camera/image_raw`: the name a bag stores and the graph reports for
    a relative topic in the root namespace. The one spelling of this rule."""
    return topic if topic.startswith("/") else f"/{topic}"
