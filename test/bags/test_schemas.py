"""Bags recorded with an older message definition (bags/schemas.py): the committed
`legacy_contacts_v1` bag (recorded before Contacts.msg had `position`/`normal`), a sqlite3 bag
written with that older definition, and bags whose contacts carry geometry, all real files read
by the one reader; translated bytes checked with rclpy's own deserializer (what a subscriber of
the player gets)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import Point, Vector3
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from vla_pruned_ros_msgs.msg import Contacts

from vla_pruned_ros.bags.reader import BagReader
from vla_pruned_ros.bags.writer import open_writer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bags"
LEGACY = FIXTURES / "legacy_contacts_v1"
CONTACTS = "vla_pruned_ros_msgs/msg/Contacts"


def _legacy_schema() -> str:
    with (LEGACY / "manip.mcap").open("rb") as f:
        summary = make_reader(f).get_summary()
    return next(s.data.decode() for s in summary.schemas.values() if s.name == CONTACTS)


def _legacy_store():
    """A typestore with Contacts as the legacy bag defines it (three arrays)."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(_legacy_schema(), CONTACTS))
    return store


def _raw_contacts(bag: Path) -> list[bytes]:
    with next(bag.glob("*.mcap")).open("rb") as f:
        return [bytes(m.data) for _, ch, m in make_reader(f).iter_messages(topics=["/contacts"])]


def test_legacy_bag_decodes_with_its_own_definition_and_plays_as_the_installed_type(
    caplog,
) -> None:
    assert "position" not in _legacy_schema()
    old = _legacy_store()
    stored = [old.deserialize_cdr(raw, CONTACTS) for raw in _raw_contacts(LEGACY)]
    with caplog.at_level(logging.WARNING, logger="vla_pruned_ros.bags"), BagReader(LEGACY) as r:
        translation = r.translations()["/contacts"]
        assert list(r.translations()) == ["/contacts"]  # every other type agrees
        records = list(r.records(["/contacts"]))
    assert translation.missing == ("position", "normal") and translation.dropped == ()
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "vla_pruned_ros.bags"]
    assert len(lines) == 1 and "/contacts" in lines[0] and "older" in lines[0], lines
    assert len(records) == len(stored) > 100
    touching = 0
    for record, before in zip(records, stored, strict=True):
        msg = deserialize_message(bytes(record.raw), Contacts)  # what the player publishes
        assert list(msg.body_a) == list(before.body_a) == list(record.message.body_a)
        assert list(msg.body_b) == list(before.body_b)
        np.testing.assert_array_equal(np.asarray(msg.force), before.force)
        assert msg.header.stamp.sec == before.header.stamp.sec
        assert msg.header.stamp.nanosec == before.header.stamp.nanosec
        assert list(msg.position) == [] and list(msg.normal) == []
        touching += bool(len(msg.body_a))
    assert touching > 10  # the bag's collisions are still there


def test_bytes_pass_through_unchanged_when_definitions_agree() -> None:
    """The re-recorded fixtures: nothing to translate, each message's bytes as stored."""
    for task in ("nav", "manip"):
        with BagReader(FIXTURES / task) as reader:
            assert reader.translations() == {}
            got = [bytes(r.raw) for r in reader.records(["/contacts"], decode=False)]
        assert got == _raw_contacts(FIXTURES / task)


def test_recorded_contacts_carry_their_geometry() -> None:
    with BagReader(FIXTURES / "manip") as reader:
        touching = [r.message for r in reader.records(["/contacts"]) if len(r.message.body_a)]
    assert touching
    for m in touching:
        assert len(m.position) == len(m.normal) == len(m.body_a)
        for n in m.normal:
            assert np.hypot(n.x, n.y) > 0.5 and abs(np.linalg.norm([n.x, n.y, n.z]) - 1) < 1e-6


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_with_contact_geometry_round_trips(tmp_path, storage) -> None:
    from vla_pruned_ros.bags.types import typestore

    sent = Contacts(body_a=["base", "wall_e"], body_b=["wall_n", "base"], force=[2.0, 5.0])
    sent.position = [Point(x=0.1, y=0.15, z=0.05), Point(x=0.15, y=-0.02)]
    sent.normal = [Vector3(y=1.0), Vector3(x=-1.0)]
    raw = serialize_message(sent)
    with open_writer(tmp_path / "bag", storage) as writer:
        conn = writer.add_connection("/contacts", CONTACTS, typestore=typestore())
        writer.write(conn, 1_000_000_000, raw)
    with BagReader(tmp_path / "bag") as reader:
        assert reader.translations() == {}
        (record,) = list(reader.records())
    assert bytes(record.raw) == raw
    back = deserialize_message(bytes(record.raw), Contacts)
    assert back == sent
    assert [(p.x, p.y, p.z) for p in record.message.position] == [
        (0.1, 0.15, 0.05),
        (0.15, -0.02, 0.0),
    ]


def test_a_sqlite3_bag_with_the_older_definition_is_translated(tmp_path) -> None:
    old = _legacy_store()
    header = old.types["std_msgs/msg/Header"](
        stamp=old.types["builtin_interfaces/msg/Time"](sec=3, nanosec=5), frame_id=""
    )
    msg = old.types[CONTACTS](header=header, body_a=["base"], body_b=["wall_e"],
                              force=np.array([4.0]))  # fmt: skip
    with open_writer(tmp_path / "bag", "sqlite3") as writer:
        conn = writer.add_connection("/contacts", CONTACTS, typestore=old)
        writer.write(conn, 3_000_000_005, old.serialize_cdr(msg, CONTACTS))
    with BagReader(tmp_path / "bag") as reader:
        assert reader.translations()["/contacts"].missing == ("position", "normal")
        (record,) = list(reader.records())
    back = deserialize_message(bytes(record.raw), Contacts)
    assert list(back.body_a) == ["base"] and list(back.force) == [4.0]
    assert back.header.stamp.sec == 3 and list(back.position) == []


def test_a_cut_legacy_bag_is_still_translated(tmp_path) -> None:
    """No summary to read the definitions from: they come from the records before the cut."""
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in LEGACY.iterdir():
        data = f.read_bytes()
        (cut / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".mcap" else data)
    with BagReader(cut) as reader:
        assert list(reader.translations()) == ["/contacts"]
        records = list(reader.records(["/contacts"], decode=False))
        assert reader.report.truncated
    assert records
    for r in records:
        assert list(deserialize_message(bytes(r.raw), Contacts).position) == []
