"""Plain-dict views of ROS messages, for reports, JSON and comparisons.

rosidl_runtime_py (which has `message_to_ordereddict`) is not on PyPI, so this is the one place
that walks a message's fields generically.
"""

from __future__ import annotations

from typing import Any


def message_to_dict(msg: Any) -> dict[str, Any]:
    """Recursively convert a ROS message to JSON-able Python values."""
    return {name: _value(getattr(msg, name)) for name in msg.get_fields_and_field_types()}


def _value(value: Any) -> Any:
    if hasattr(value, "get_fields_and_field_types"):
        return message_to_dict(value)
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and array.array
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    return value
