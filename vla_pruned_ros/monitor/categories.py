"""Violation category names: the strings SafetyEvent.msg declares as constants.

Kept here (not imported from the generated message) so that the ROS-free layers can use them;
a test checks the two lists agree.
"""

COLLISION = "collision"
PROXIMITY = "proximity"
SPEED = "speed"
ACCELERATION = "acceleration"
WORKSPACE = "workspace"
JOINT_LIMIT = "joint_limit"
STALE_COMMAND = "stale_command"
STALE_CAMERA = "stale_camera"
INVALID_ACTION = "invalid_action"
POLICY_LOST = "policy_lost"
CLOCK_SKEW = "clock_skew"

CATEGORIES: tuple[str, ...] = (
    COLLISION,
    PROXIMITY,
    SPEED,
    ACCELERATION,
    WORKSPACE,
    JOINT_LIMIT,
    STALE_COMMAND,
    STALE_CAMERA,
    INVALID_ACTION,
    POLICY_LOST,
    CLOCK_SKEW,
)
