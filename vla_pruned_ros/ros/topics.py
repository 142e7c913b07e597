"""Default topic names: the one place they are spelled. Nodes take them as parameters (so a
robot can remap), and launch files, configs and tests refer to these defaults."""

CAMERA = "camera/image_raw"
INSTRUCTION = "instruction"
ACTION = "vla/action"  # VLAAction, from the policy node
CMD_RAW = "cmd_vel_raw"  # the policy's Twist, before the safety gate
CMD = "cmd_vel"  # gated Twist, to the robot
CONTACTS = "contacts"
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
BASE_FRAME = "base_link"  # REP-105 frame of velocity commands (TwistStamped)
