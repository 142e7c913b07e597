"""Message types for bags: a rosbags typestore that also knows our own messages, and the rclpy
class for a type name. The one place both worlds meet."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from vla_pruned_ros.paths import package_file

OUR_PACKAGE = "vla_pruned_ros_msgs"
OUR_MESSAGES = ("VLAAction", "SafetyEvent", "SafetyStatus", "Contacts")


class UnknownMessageType(LookupError):
    """A type name that neither ROS 2 Kilted nor this package defines."""


@cache
def typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus vla_pruned_ros_msgs, read from msg/*.msg."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for name in OUR_MESSAGES:
        text = package_file(f"msg/{name}.msg").read_text()
        types.update(get_types_from_msg(text, f"{OUR_PACKAGE}/msg/{name}"))
    store.register(types)
    return store


def rclpy_class(msgtype: str) -> Any:
    """`sensor_msgs/msg/Image` -> sensor_msgs.msg.Image (the generated rclpy class)."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as err:
        raise UnknownMessageType(f"cannot import message type {msgtype!r}: {err}") from err
