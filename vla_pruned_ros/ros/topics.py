"""Default topic names: the one place they are spelled. Nodes take them as parameters (so a
robot can remap), and launch files, configs and tests refer to these defaults."""

CAMERA = "camera/image_raw"
INSTRUCTION = "instruction"
ACTION = "vla/action"  # VLAAction, from the policy node
CMD_RAW = "cmd_vel_raw"  # the policy's Twist, before the safety gate
CMD = "cmd_vel"  # gated Twist, to the robot
CONTACTS = "contacts"
SCAN = "scan"
ODOM = "odom"
JOINT_STATES = "joint_states"
EPISODE = "episode"  # std_msgs/String: "start <id>" or "end"
SAFETY_EVENTS = "safety/events"
SAFETY_STATUS = "safety/status"
DIAGNOSTICS = "/diagnostics"
