"""QoS between rclpy and bag metadata. The enum values agree (both mirror rmw's), so the
conversion is by value; only history depth and durations need care."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)

_INFINITE = QosTime(0x7FFFFFFF, 0xFFFFFFFF)


def to_bag_qos(profile: QoSProfile) -> Qos:
    return Qos(
        history=QosHistory(int(profile.history)),
        depth=int(profile.depth),
        reliability=QosReliability(int(profile.reliability)),
        durability=QosDurability(int(profile.durability)),
        deadline=_INFINITE,
        lifespan=_INFINITE,
        liveliness=QosLiveliness(int(profile.liveliness)),
        liveliness_lease_duration=_INFINITE,
        avoid_ros_namespace_conventions=False,
    )


# A bag that does not record a depth (rosbag2 writes 0) is republished with this much history
# on reliable topics, so a replay into a busy graph keeps every recorded message (a dropped
# contacts message changes the collision count); best-effort streams keep `default_depth`.
RELIABLE_REPLAY_DEPTH = 100


def from_bag_qos(qos: Qos | None, default_depth: int = 10) -> QoSProfile:
    """The profile to republish with; unknown or system-default fields become reliable/volatile
    (what `ros2 bag play` falls back to)."""
    if qos is None:
        return QoSProfile(depth=RELIABLE_REPLAY_DEPTH)
    best_effort = qos.reliability == QosReliability.BEST_EFFORT
    reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
    durability = (
        DurabilityPolicy.TRANSIENT_LOCAL
        if qos.durability == QosDurability.TRANSIENT_LOCAL
        else DurabilityPolicy.VOLATILE
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, qos.depth or (default_depth if best_effort else RELIABLE_REPLAY_DEPTH)),
        reliability=reliability,
        durability=durability,
        liveliness=LivelinessPolicy.AUTOMATIC,
    )
