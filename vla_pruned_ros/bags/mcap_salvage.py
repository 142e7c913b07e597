"""Read what is readable from a truncated MCAP file (a recorder killed mid-write, a copy cut
short), which the regular reader refuses because the summary at its end is missing.

MCAP is a sequence of (opcode u8, length u64, content) records; schemas, channels and messages
may sit inside chunks. We walk them from the start and stop at the first incomplete record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
SCHEMA, CHANNEL, MESSAGE, CHUNK = 0x03, 0x04, 0x05, 0x06


class Truncated(Exception):
    """The file ends inside a record; `messages` were read before it."""

    def __init__(self, messages: int, offset: int) -> None:
        super().__init__(
            f"the file ends inside a record at byte {offset}, after {messages} messages"
        )
        self.messages, self.offset = messages, offset


@dataclass(frozen=True)
class SalvagedMessage:
    topic: str
    msgtype: str
    log_time: int
    data: bytes


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return buf[pos + 4 : pos + 4 + n].decode(), pos + 4 + n


def _decompress(kind: str, data: bytes, size: int) -> bytes:
    if kind == "":
        return data
    if kind == "zstd":
        from backports import zstd

        return zstd.decompress(data)
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported MCAP chunk compression {kind!r}")


def salvage(path: Path) -> Iterator[SalvagedMessage]:
    """Messages in file order; raises Truncated when the file breaks off."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not an MCAP file")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    count = 0

    def records(buf: bytes, start: int, top: bool) -> Iterator[SalvagedMessage]:
        nonlocal count
        pos = start
        while pos < len(buf):
            if len(buf) - pos < 9:
                if top and buf[pos:] == MAGIC[: len(buf) - pos]:
                    return
                raise Truncated(count, pos)
            op, length = struct.unpack_from("<BQ", buf, pos)
            body = buf[pos + 9 : pos + 9 + length]
            if len(body) < length:
                raise Truncated(count, pos)
            if op == SCHEMA:
                (sid,) = struct.unpack_from("<H", body, 0)
                schemas[sid], _ = _string(body, 2)
            elif op == CHANNEL:
                cid, sid = struct.unpack_from("<HH", body, 0)
                topic, _ = _string(body, 4)
                channels[cid] = (topic, schemas.get(sid, ""))
            elif op == MESSAGE:
                (cid,) = struct.unpack_from("<H", body, 0)
                (log_time,) = struct.unpack_from("<Q", body, 6)
                if cid in channels:
                    count += 1
                    topic, msgtype = channels[cid]
                    yield SalvagedMessage(topic, msgtype, log_time, bytes(body[22:]))
            elif op == CHUNK:
                size = struct.unpack_from("<Q", body, 16)[0]
                kind, p = _string(body, 28)
                (n,) = struct.unpack_from("<Q", body, p)
                yield from records(_decompress(kind, body[p + 8 : p + 8 + n], size), 0, False)
            pos += 9 + length

    yield from records(data, len(MAGIC), True)
