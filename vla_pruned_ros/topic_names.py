"""Default topic names: the one place they are spelled, ROS-free so that offline evaluation,
calibration and the bag tools read the same facts as the nodes. Nodes take them as parameters
(so a robot can remap); the config YAMLs repeat them for a user to read and edit, and
`test/test_topic_names.py` holds every YAML topic parameter equal to the constant here.

One naming scheme: a topic parameter is named for the topic's role, and every node that touches
that topic calls it the same (TOPIC_PARAMETERS below; `test/test_names.py` checks each node):

    parameter            default           published by          read by
    camera_topic         camera/image_raw  robot, sim node       policy node, safety monitor
    instruction_topic    instruction       user, sim node        policy node
    action_topic         vla/action        policy node           safety monitor
    cmd_raw_topic        cmd_vel_raw       policy node           safety monitor
    cmd_topic            cmd_vel           safety monitor        robot, sim node
    contacts_topic       contacts          sim node              safety monitor
    gz_contacts_topic    gz_contacts       Gazebo bridge         safety monitor
    scan_topic           scan              robot, sim node       safety monitor
    odom_topic           odom              robot, sim node       safety monitor
    joint_states_topic   joint_states      robot, sim node       safety monitor
    episode_topic        episode           sim node              safety monitor
    events_topic         safety/events     safety monitor        user, bags
    status_topic         safety/status     safety monitor        user, bags

Renamed in this scheme (the old names still work once, with a deprecation warning:
`ros/params.py`): the policy's `image_topic` and `cmd_topic` (its output) are `camera_topic` and
`cmd_raw_topic`; the monitor's `cmd_in_topic` and `cmd_out_topic` are `cmd_raw_topic` and
`cmd_topic`.
"""

from __future__ import annotations

CAMERA = "camera/image_raw"
INSTRUCTION = "instruction"
ACTION = "vla/action"  # VLAAction, from the policy node
CMD_RAW = "cmd_vel_raw"  # the policy's Twist, before the safety gate
CMD = "cmd_vel"  # gated Twist, to the robot
CONTACTS = "contacts"
GZ_CONTACTS = "gz_contacts"  # Gazebo's contacts, bridged (gz_bridge.yaml, safety_monitor_gazebo)
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

# Topic parameter name -> default topic, the same on every node that declares it (the scheme
# above). `gz_contacts_topic` defaults to "" on the monitor (Gazebo's contacts: not used).
TOPIC_PARAMETERS: dict[str, str] = {
    "camera_topic": CAMERA,
    "instruction_topic": INSTRUCTION,
    "action_topic": ACTION,
    "cmd_raw_topic": CMD_RAW,
    "cmd_topic": CMD,
    "contacts_topic": CONTACTS,
    "gz_contacts_topic": GZ_CONTACTS,
    "scan_topic": SCAN,
    "odom_topic": ODOM,
    "joint_states_topic": JOINT_STATES,
    "episode_topic": EPISODE,
    "events_topic": SAFETY_EVENTS,
    "status_topic": SAFETY_STATUS,
}


def absolute(topic: str) -> str:
    """`camera/image_raw` -> `/camera/image_raw`: the name a bag stores and the graph reports for
    a relative topic in the root namespace. The one spelling of this rule."""
    return topic if topic.startswith("/") else f"/{topic}"
