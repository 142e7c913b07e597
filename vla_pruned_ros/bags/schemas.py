"""A bag recorded with an older message definition stays readable and playable.

CDR has no optional trailing fields: a message whose definition gained fields (Contacts.msg its
`position` and `normal` arrays) cannot be decoded from bytes recorded before, and a player that
republishes a bag's raw bytes under the installed type sends subscribers bytes they cannot read.
A rosbag2 bag stores each type's definition (the MCAP schema, the sqlite3 `message_definitions`),
so where that stored definition differs in structure from the installed one (`types.typestore`),
`Translation` decodes each message with the bag's own definition and re-encodes it with the
installed one: fields the bag lacks take their defaults (0, "", empty arrays), fields the
installed type no longer has are dropped. Where the definitions agree (comments and layout do
not count) nothing is built and the bytes pass through unchanged.

The reader (`reader.BagReader.records`) applies it, so offline evaluation and the live player
see installed-type bytes alike. ROS-free: rosbags only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

LOG = logging.getLogger("vla_pruned_ros.bags")

_DTYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}  # fmt: skip


@dataclass(frozen=True)
class StoredDefinition:
    """A type's definition as a bag stores it: `encoding` "ros2msg" or "ros2idl"; `text` the
    definition with its dependencies (empty: the bag stored none)."""

    topic: str
    msgtype: str
    encoding: str
    text: str


@dataclass(frozen=True)
class Translation:
    """Bytes of one topic recorded under the bag's definition -> bytes of the installed one."""

    topic: str
    msgtype: str
    missing: tuple[str, ...]  # installed fields the bag's type lacks (left at defaults)
    dropped: tuple[str, ...]  # bag fields the installed type no longer has
    bag_store: Typestore
    installed: Typestore

    def __call__(self, raw: bytes | memoryview) -> bytes:
        old = self.bag_store.deserialize_cdr(raw, self.msgtype)
        new = _convert(old, self.msgtype, self.bag_store, self.installed)
        return bytes(self.installed.serialize_cdr(new, self.msgtype))

    def describe(self) -> str:
        what = []
        if self.missing:
            what.append(f"lacks {', '.join(self.missing)} (left at defaults)")
        if self.dropped:
            what.append(f"has {', '.join(self.dropped)} (dropped)")
        return f"{self.topic} ({self.msgtype}: {'; '.join(what) or 'field types differ'})"


def translations(
    bag: object, definitions: Iterable[StoredDefinition], installed: Typestore
) -> dict[str, Translation]:
    """The topics whose stored definition differs from `installed`, with their translation;
    one log line names them all (nothing is logged, or built, when every definition agrees).
    Types the installed store does not know, and topics without a stored definition, pass."""
    out: dict[str, Translation] = {}
    for d in definitions:
        if d.text and d.msgtype in installed.fielddefs:
            t = _translation(d.msgtype, d.encoding, d.text, installed)
            if t is not None:
                out[d.topic] = dataclasses.replace(t, topic=d.topic)
    if out:
        LOG.warning(
            "%s was recorded with older message definitions: %s; its messages are decoded "
            "with the bag's definition and re-encoded with the installed one",
            bag, ", ".join(t.describe() for t in out.values()),
        )  # fmt: skip
    return out


@cache
def _translation(
    msgtype: str, encoding: str, text: str, installed: Typestore
) -> Translation | None:
    bag_types = _parse(msgtype, encoding, text)
    if msgtype not in bag_types:
        return None
    bag_store = get_typestore(Stores.ROS2_KILTED)
    for name, (_, fields) in bag_types.items():  # the bag's definition wins over the base's
        have = bag_store.fielddefs.get(name)
        if have is not None and _lower(have[1]) != _lower(fields):
            del bag_store.fielddefs[name], bag_store.types[name]
    bag_store.register(bag_types)
    if _shape(msgtype, bag_store) == _shape(msgtype, installed):
        return None
    old = [n for n, _ in bag_store.fielddefs[msgtype][1]]
    new = [n for n, _ in installed.fielddefs[msgtype][1]]
    missing = tuple(n for n in new if n not in old)
    dropped = tuple(n for n in old if n not in new)
    return Translation("", msgtype, missing, dropped, bag_store, installed)


def _parse(msgtype: str, encoding: str, text: str) -> dict:
    if encoding == "ros2idl":
        return get_types_from_idl(text)
    return get_types_from_msg(text, msgtype)


def _lower(fields: list) -> list:
    return [(name.lower(), desc) for name, desc in fields]


def _shape(typename: str, store: Typestore) -> tuple:
    """A type's wire layout: field names and types, nested types expanded (constants, comments
    and how the text was laid out do not change the bytes)."""

    def desc(d: tuple) -> tuple:
        kind, payload = d
        if kind == Nodetype.NAME:
            return ("name", _shape(payload, store))
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            return (kind.name, desc(payload[0]), payload[1])
        return (kind.name, payload)

    return tuple((name.lower(), desc(d)) for name, d in store.fielddefs[typename][1])


def _convert(value: Any, typename: str, old: Typestore, new: Typestore) -> Any:
    """`value` (a message of the bag's `typename`) as the installed type: each installed field
    from the bag's field of that name when it has the same kind, else its default."""
    have = dict(old.fielddefs[typename][1])
    cls = new.types[typename]
    kwargs = {}
    for (name, d), f in zip(new.fielddefs[typename][1], _fields(cls), strict=True):
        before = have.get(name)
        if before is None or before[0] != d[0]:
            kwargs[f.name] = _default(d, new)
        else:
            kwargs[f.name] = _value(getattr(value, f.name), before, d, old, new)
    return cls(**kwargs)


def _value(v: Any, before: tuple, d: tuple, old: Typestore, new: Typestore) -> Any:
    kind, payload = d
    if kind == Nodetype.NAME:
        return _convert(v, payload, old, new)
    if kind == Nodetype.BASE:
        return v if before == d else _default(d, new)
    sub, sub_before = payload[0], before[1][0]
    if sub[0] == Nodetype.NAME and sub_before[0] == Nodetype.NAME:
        items = [_convert(x, sub[1], old, new) for x in v]
    elif sub == sub_before:
        return v
    else:
        return _default(d, new)
    if kind == Nodetype.ARRAY and len(items) != payload[1]:
        return _default(d, new)
    return items


def _default(d: tuple, store: Typestore) -> Any:
    """A field's default value, as rclpy would construct it."""
    kind, payload = d
    if kind == Nodetype.BASE:
        base = payload[0]
        if base in ("string", "wstring"):
            return ""
        return False if base == "bool" else 0.0 if base.startswith("float") else 0
    if kind == Nodetype.NAME:
        cls = store.types[payload]
        return cls(**{
            f.name: _default(d2, store)
            for (_, d2), f in zip(store.fielddefs[payload][1], _fields(cls), strict=True)
        })  # fmt: skip
    sub, length = payload
    count = length if kind == Nodetype.ARRAY else 0
    if sub[0] == Nodetype.BASE and sub[1][0] in _DTYPES:
        return np.zeros(count, dtype=_DTYPES[sub[1][0]])
    return [_default(sub, store) for _ in range(count)]


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name != "__msgtype__"]


def mcap_definitions(path: Path) -> list[StoredDefinition] | None:
    """Each channel's stored schema, from an MCAP file's summary; None when it has none (a
    file cut short: the reader then takes them from the records it streams)."""
    from mcap.reader import make_reader

    try:
        with path.open("rb") as f:
            summary = make_reader(f).get_summary()
    except Exception:  # noqa: BLE001 - no footer or a damaged summary
        return None
    if summary is None:
        return None
    return stored_definitions(summary.schemas, summary.channels)


def stored_definitions(schemas: Mapping[int, Any], channels: Mapping[int, Any]) -> list:
    """StoredDefinitions from MCAP schema and channel records (by id)."""
    out = []
    for ch in channels.values():
        schema = schemas.get(ch.schema_id)
        if schema is not None:
            text = bytes(schema.data).decode(errors="replace")
            out.append(StoredDefinition(ch.topic, schema.name, schema.encoding, text))
    return out


def sqlite_definitions(connections: Iterable[Any]) -> list[StoredDefinition]:
    """Each connection's stored definition in a sqlite3 bag (rosbags `Connection.msgdef`;
    empty in bags older than rosbag2's message_definitions table)."""
    out = []
    for c in connections:
        msgdef = getattr(c, "msgdef", None)
        text = getattr(msgdef, "data", "") or ""
        fmt = getattr(getattr(msgdef, "format", None), "name", "MSG")
        out.append(StoredDefinition(c.topic, c.msgtype, "ros2idl" if fmt == "IDL" else "ros2msg",
                                    text))  # fmt: skip
    return out
