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

STOP_CATEGORIES: tuple[str, ...] = (
    COLLISION,
    PROXIMITY,
    WORKSPACE,
    STALE_COMMAND,
    STALE_CAMERA,
    POLICY_LOST,
    INVALID_ACTION,
    CLOCK_SKEW,
)
"""The categories that stop the robot by default (`SafetyLimits.stop_categories`): everything
that means the robot may hit something or act blind. Speed, acceleration and joint limits are
counted and clamped, not stopped on. A check a robot lacks never fires (the pusher has no scan,
so `proximity` costs it nothing), so the shipped YAMLs take this default instead of a copy."""
