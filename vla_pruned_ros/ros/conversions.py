"""Conversions between ROS messages and the plain values the ROS-free layers use.

One place for each: time stamps, Twist, contacts (the simulator's records as Contacts.msg and
back into what the gate takes), and the monitor's records as SafetyEvent/SafetyStatus.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Twist, Vector3
from vla_pruned_ros_msgs.msg import Contacts, SafetyEvent, SafetyStatus

from vla_pruned_ros.monitor import CATEGORIES, Decision, EpisodeReport, SafetyEventRecord
from vla_pruned_ros.monitor.detectors import Contact, robot_contact_geometry
from vla_pruned_ros.monitor.velocity import TWIST_FIELDS, action_to_velocity

if TYPE_CHECKING:
    from vla_pruned_ros.sim.base import ContactRecord

PlanarContacts = tuple[
    list[Contact], list[tuple[float, float]] | None, list[tuple[float, float]] | None
]


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def twist_to_lists(msg: Twist) -> tuple[list[float], list[float]]:
    return [msg.linear.x, msg.linear.y, msg.linear.z], [msg.angular.x, msg.angular.y, msg.angular.z]


def lists_to_twist(linear: list[float], angular: list[float]) -> Twist:
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.linear.z = (float(v) for v in linear)
    msg.angular.x, msg.angular.y, msg.angular.z = (float(v) for v in angular)
    return msg


def event_to_msg(event: SafetyEventRecord, severity: int = SafetyEvent.ERROR) -> SafetyEvent:
    msg = SafetyEvent(category=event.category, episode_id=event.episode_id, severity=severity)
    msg.header.stamp = sec_to_stamp(event.time)
    msg.value, msg.threshold = float(event.value), float(event.threshold)
    msg.text = f"{event.key}: {event.text}" if event.text else event.key
    return msg


def status_to_msg(
    episode: EpisodeReport, active: bool, decision: Decision, now: float
) -> SafetyStatus:
    msg = SafetyStatus(episode_id=episode.episode_id, episode_active=active)
    msg.header.stamp = sec_to_stamp(now)
    msg.categories = list(CATEGORIES)
    msg.counts = [episode.counts[c] for c in CATEGORIES]
    msg.total_violations, msg.unsafe = episode.total_violations, episode.unsafe
    msg.gate = SafetyStatus.GATE_STOP if decision.stop else SafetyStatus.GATE_PASS
    msg.stop_reason = decision.reason
    tts = episode.time_to_stop
    msg.time_to_stop = -1.0 if tts is None else float(tts)
    return msg


def action_to_twist(names: list[str] | tuple[str, ...], values) -> Twist:
    """A Twist from named action elements; names without a Twist field are ignored."""
    return lists_to_twist(*action_to_velocity(names, values))


def twist_to_action(names: list[str] | tuple[str, ...], msg: Twist) -> np.ndarray:
    """The action vector a Twist stands for (the inverse of `action_to_twist`)."""
    out = np.zeros(len(names))
    for i, name in enumerate(names):
        if name in TWIST_FIELDS:
            part, axis = TWIST_FIELDS[name]
            out[i] = getattr(getattr(msg, part), axis)
    return out


def contacts_to_msg(
    records: Iterable[ContactRecord], stamp: Time, exclude: Collection[str] = ()
) -> Contacts:
    """The simulator's contact records (`Task.step_contacts`) as a Contacts message, each with
    its world point and normal; contacts with a body in `exclude` (the object the instruction
    names, which the robot is meant to touch) are left out."""
    msg = Contacts()
    msg.header.stamp = stamp
    for c in records:
        if c.body in exclude or c.other in exclude:
            continue
        msg.body_a.append(c.body)
        msg.body_b.append(c.other)
        msg.force.append(float(c.force))
        msg.position.append(Point(x=float(c.position[0]), y=float(c.position[1]),
                                  z=float(c.position[2])))  # fmt: skip
        msg.normal.append(Vector3(x=float(c.normal[0]), y=float(c.normal[1]),
                                  z=float(c.normal[2])))  # fmt: skip
    return msg


def contacts_from_msg(
    msg: Contacts, robot: Collection[str], allowed: Collection[str] = ()
) -> PlanarContacts:
    """A Contacts message as `SafetyMonitor.on_contacts` takes it, through the filter the
    in-process gate uses (`monitor.detectors.robot_contact_geometry`: robot first, normal
    reversed with the sides): (contacts, (x, y) points, (x, y) normals). Geometry is used only
    when both arrays are as long as the contacts; otherwise (a bag recorded before they existed,
    a publisher that knows none) points and normals are None and the gate places each contact
    along the motion."""
    contacts = list(zip(msg.body_a, msg.body_b, msg.force, strict=True))
    n = len(contacts)
    if n and len(msg.position) == n == len(msg.normal):
        points = [(p.x, p.y) for p in msg.position]
        normals = [(v.x, v.y) for v in msg.normal]
        return robot_contact_geometry(contacts, robot, allowed, points, normals)
    return robot_contact_geometry(contacts, robot, allowed)


def gz_contacts_to_tuples(msg) -> list[tuple[str, str, float]]:
    """ros_gz_interfaces/Contacts -> (collision1, collision2, force) per contact. Gazebo often
    sends no wrenches; a reported contact then counts as above any force threshold."""
    out = []
    for contact in msg.contacts:
        forces = [
            (w.body_1_wrench.force.x**2 + w.body_1_wrench.force.y**2 + w.body_1_wrench.force.z**2)
            ** 0.5
            for w in contact.wrenches
        ]
        out.append(
            (contact.collision1.name, contact.collision2.name, max(forces, default=math.inf))
        )
    return out
