"""The default topic names, re-exported for the nodes: they are spelled once, ROS-free, in
`vla_pruned_ros.topic_names` (offline evaluation and calibration read them there)."""

from vla_pruned_ros.topic_names import (  # noqa: F401
    ACTION,
    BASE_FRAME,
    CAMERA,
    CLOCK,
    CMD,
    CMD_RAW,
    CONTACTS,
    DIAGNOSTICS,
    EPISODE,
    EVIDENCE_DEPTH,
    GZ_CONTACTS,
    INSTRUCTION,
    JOINT_STATES,
    ODOM,
    SAFETY_EVENTS,
    SAFETY_STATUS,
    SCAN,
    absolute,
)
