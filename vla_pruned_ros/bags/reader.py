"""The one bag reader: rosbag2 folders (or a bare .mcap file) read without rclpy, for offline
evaluation, calibration, `vla-bag info` and the live player.

- MCAP is read as a stream, record by record with the `mcap` library's record parsers, one chunk
  in memory at a time. Every chunk's CRC is checked (a writer that stored CRC 0 is counted as
  unchecked); a mismatch, or a chunk that does not decompress or parse, is a `CorruptChunk`
  naming the file, the chunk, its byte offset, time span and topics. A file that breaks off (a
  recorder killed mid-write, a copy cut short) keeps every whole message before the cut,
  including those of the unfinished chunk, and says where it broke in `ReadReport.truncated`.
- sqlite3 (.db3) bags go through rosbags' reader.
- Messages are decoded from CDR with the rosbags typestore that knows our own messages
  (`bags/types.py`), so no ROS installation is needed.
- Stamps: each record carries its log time and its header stamp (the log time for messages
  without a header). Stamps that go backwards on a topic and gaps longer than `gap_s` are listed
  in the `ReadReport`; nothing stops. `reorder_by_stamp` sorts a stream within a bounded window
  (where that is safe) and reports what it could not sort.
"""

from __future__ import annotations

import heapq
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Schema

from vla_pruned_ros.topic_names import absolute

MAGIC = b"\x89MCAP0\r\n"
GAP_S = 1.0  # a topic silent this long (by stamp) is listed as a gap


class BagError(ValueError):
    """A bag that cannot be read or played; the message names the problem."""


class CorruptChunk(BagError):
    """A chunk whose CRC, compression or records are wrong: the bag is refused."""

    def __init__(self, message: str, file: Path, index: int, offset: int, topics: list[str]):
        super().__init__(message)
        self.file, self.index, self.offset, self.topics = file, index, offset, topics


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int  # messages, as the bag's index says (-1: not indexed, e.g. a truncated file)
    # The publishers' offered QoS profiles: rosbags Qos profiles, or the YAML text an MCAP
    # channel stores them as, parsed on first use of `qos` (only the live player needs them,
    # and parsing them with rosbags' YAML reader is most of opening a small bag).
    offered_qos: list | str = field(default_factory=list)

    @property
    def qos(self) -> list:
        """The rosbags Qos profiles offered by the publishers ([] when none or unreadable)."""
        if isinstance(self.offered_qos, str):
            return _qos(self.offered_qos)
        return list(self.offered_qos)


@dataclass(frozen=True)
class Record:
    """One message: its topic and type, log time and stamp (ns), the serialized CDR bytes and,
    when decoded, the message (a rosbags dataclass with the ROS field names)."""

    topic: str
    msgtype: str
    log_ns: int
    stamp_ns: int
    raw: bytes | memoryview
    message: Any = None


@dataclass(frozen=True)
class StampIssue:
    topic: str
    index: int  # the message's position on its topic, from 0
    stamp_s: float
    previous_s: float


@dataclass(frozen=True)
class Gap:
    topic: str
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


@dataclass
class ReadReport:
    """What reading found besides the messages: never a silent stop."""

    messages: int = 0
    out_of_order: list[StampIssue] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    truncated: str | None = None  # where and how the file broke off
    crc_checked_chunks: int = 0
    crc_unchecked_chunks: int = 0  # written with CRC 0 (rosbags' writer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stamp_ns(message: Any, log_ns: int) -> tuple[int, bool]:
    header = getattr(message, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        return log_ns, False
    return stamp.sec * 1_000_000_000 + stamp.nanosec, True


class _Mcap:
    """One MCAP file as a stream of (channel topic, type, log time, raw) in file order."""

    def __init__(self, path: Path, report: ReadReport) -> None:
        self.path, self.report = path, report
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}
        self.records_seen: dict[str, dict] = {"schemas": {}, "channels": {}}  # for schemas.py
        self.qos: dict[str, str] = {}  # topic -> offered_qos_profiles as the channel stores it

    def messages(self) -> Iterator[tuple[str, str, int, memoryview]]:
        with self.path.open("rb") as f:
            if f.read(8) != MAGIC:
                raise BagError(f"{self.path} is not an MCAP file")
            offset, chunk_index = 8, 0
            while True:
                head = f.read(9)
                if len(head) < 9:
                    self._cut(offset, "the file ends without its footer" if not head else
                              "the file ends inside a record header")  # fmt: skip
                    return
                opcode, length = struct.unpack("<BQ", head)
                body = f.read(length)
                if len(body) < length:
                    if opcode == Opcode.CHUNK:
                        kept = yield from self._partial_chunk(memoryview(body))
                        self._cut(offset, f"the file ends inside chunk {chunk_index} after "
                                  f"{len(body)} of its {length} bytes; {kept} whole messages "
                                  "of that chunk kept")  # fmt: skip
                    else:
                        self._cut(offset, f"the file ends inside a record (opcode {opcode:#x})")
                    return
                if opcode == Opcode.CHUNK:
                    yield from self._chunk(body, chunk_index, offset)
                    chunk_index += 1
                elif opcode in (Opcode.DATA_END, Opcode.FOOTER):
                    return  # the summary that follows repeats what the data section held
                else:
                    yield from self._records(memoryview(body), opcode)
                offset += 9 + length

    def _cut(self, offset: int, what: str) -> None:
        self.report.truncated = f"{self.path.name}: truncated at byte {offset}: {what}"

    def _records(self, body: memoryview, opcode: int) -> Iterator[tuple[str, str, int, memoryview]]:
        if opcode == Opcode.SCHEMA:
            schema = Schema.read(ReadDataStream(BytesIO(body)))
            self.schemas[schema.id] = schema.name
            self.records_seen["schemas"][schema.id] = schema
        elif opcode == Opcode.CHANNEL:
            channel = Channel.read(ReadDataStream(BytesIO(body)))
            self.channels[channel.id] = (channel.topic, self.schemas.get(channel.schema_id, ""))
            self.records_seen["channels"][channel.id] = channel
            self.qos[channel.topic] = channel.metadata.get("offered_qos_profiles", "")
        elif opcode == Opcode.MESSAGE:
            (cid,) = struct.unpack_from("<H", body, 0)
            (log_ns,) = struct.unpack_from("<Q", body, 6)
            if cid in self.channels:
                topic, msgtype = self.channels[cid]
                yield topic, msgtype, log_ns, body[22:]

    def _walk(self, data: memoryview, partial: bool) -> Iterator[tuple[str, str, int, memoryview]]:
        """Records of a chunk's data; an incomplete record ends a partial chunk and is an error
        in a whole one."""
        pos = 0
        while pos < len(data):
            if len(data) - pos < 9:
                if partial:
                    return
                raise ValueError(f"a record header is cut at byte {pos} of the chunk's data")
            opcode, length = struct.unpack_from("<BQ", data, pos)
            if pos + 9 + length > len(data):
                if partial:
                    return
                raise ValueError(f"a record overruns the chunk's data at byte {pos}")
            yield from self._records(data[pos + 9 : pos + 9 + length], opcode)
            pos += 9 + length

    def _chunk(
        self, body: bytes, index: int, offset: int
    ) -> Iterator[tuple[str, str, int, memoryview]]:
        def corrupt(why: str, chunk: Chunk | None, data: bytes | None) -> CorruptChunk:
            topics = sorted(self._topics_in(data)) if data is not None else []
            span = (f", log time {chunk.message_start_time / 1e9:.3f}-"
                    f"{chunk.message_end_time / 1e9:.3f} s" if chunk else "")  # fmt: skip
            return CorruptChunk(
                f"{self.path}: chunk {index} at byte {offset} ({len(body)} bytes{span}, topics "
                f"{topics or 'unknown'}) {why}: the bag is corrupt and is refused",
                self.path, index, offset, topics,
            )  # fmt: skip

        try:
            chunk = Chunk.read(ReadDataStream(BytesIO(body)))
            data = _decompress(chunk.compression, chunk.data, chunk.uncompressed_size)
        except Exception as err:  # noqa: BLE001 - any decoder's error means the same here
            raise corrupt(f"does not decompress ({err})", None, None) from None
        if chunk.uncompressed_crc == 0:
            self.report.crc_unchecked_chunks += 1
        else:
            crc = zlib.crc32(data)
            if crc != chunk.uncompressed_crc:
                raise corrupt(f"fails its CRC check (stored {chunk.uncompressed_crc:#010x}, "
                              f"computed {crc:#010x})", chunk, data)  # fmt: skip
            self.report.crc_checked_chunks += 1
        try:
            messages = list(self._walk(memoryview(data), partial=False))
        except (ValueError, struct.error, UnicodeDecodeError) as err:
            raise corrupt(f"has broken records ({err})", chunk, data) from None
        yield from messages

    def _topics_in(self, data: bytes) -> set[str]:
        """Best effort: the topics of the messages a damaged chunk's data still shows."""
        found, pos, view = set(), 0, memoryview(data)
        try:
            while pos + 9 <= len(view):
                opcode, length = struct.unpack_from("<BQ", view, pos)
                if opcode == Opcode.MESSAGE:
                    (cid,) = struct.unpack_from("<H", view, pos + 9)
                    if cid in self.channels:
                        found.add(self.channels[cid][0])
                elif opcode == Opcode.CHANNEL:
                    found.add(
                        Channel.read(
                            ReadDataStream(BytesIO(view[pos + 9 : pos + 9 + length]))
                        ).topic
                    )
                pos += 9 + length
        except Exception:  # noqa: BLE001 - damaged data; what was found is enough
            pass
        return found

    def _partial_chunk(self, body: memoryview):
        """The whole messages at the start of a chunk the file cut short (its CRC cannot be
        checked: the rest of its data is missing)."""
        try:
            (n,) = struct.unpack_from("<I", body, 28)
            kind = bytes(body[32 : 32 + n]).decode()
            start = 32 + n + 8
            prefix = bytes(body[start:])
            if kind == "":
                data = prefix
            elif kind == "zstd":
                import zstandard

                data = zstandard.ZstdDecompressor().decompressobj().decompress(prefix)
            elif kind == "lz4":
                import lz4.frame

                data = lz4.frame.LZ4FrameDecompressor().decompress(prefix)
            else:
                return 0
        except Exception:  # noqa: BLE001 - a header or stream cut too short: nothing to keep
            return 0
        kept = 0
        for item in self._walk(memoryview(data), partial=True):
            kept += 1
            yield item
        return kept


def _mcap_definitions(path: Path) -> list:
    """A file's stored type definitions (`schemas.StoredDefinition`): from its summary, or, for
    a file cut short, from the schema and channel records streamed up to the cut."""
    from vla_pruned_ros.bags import schemas

    found = schemas.mcap_definitions(path)
    if found is not None:
        return found
    mcap = _streamed(path)
    return schemas.stored_definitions(mcap.records_seen["schemas"], mcap.records_seen["channels"])


def _streamed(path: Path) -> _Mcap:
    """A file cut short, streamed up to its cut (or its first corrupt chunk), for what its
    records declare (channels, schemas, QoS): a file without a summary says it nowhere else."""
    mcap = _Mcap(path, ReadReport())
    try:
        for _ in mcap.messages():
            pass
    except CorruptChunk:
        pass
    return mcap


def _translated(bag: Path, translation: Any, raw: bytes | memoryview, log_ns: int) -> bytes:
    """One message's bytes under the installed definition; a BagError if the bag's own
    definition does not decode them."""
    try:
        return translation(raw)
    except Exception as err:  # noqa: BLE001 - a bad CDR payload
        at = f"a {translation.msgtype} message at log time {log_ns / 1e9:.3f} s"
        raise BagError(f"{bag}: topic {translation.topic}: {at} does not decode with the "
                       f"bag's own definition: {err}") from None  # fmt: skip


def _decompress(kind: str, data: bytes, size: int) -> bytes:
    if kind == "":
        return data
    if kind == "zstd":
        import zstandard

        return zstandard.decompress(data, size)
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported chunk compression {kind!r}")


def _mcap_summary(path: Path) -> tuple[dict[str, TopicInfo], int, int] | None:
    """Topics with counts and the log-time span from an MCAP file's summary; None when it has
    none (a file cut short)."""
    from mcap.reader import make_reader

    try:
        with path.open("rb") as f:
            summary = make_reader(f).get_summary()
    except Exception:  # noqa: BLE001 - no footer or a damaged summary: stream instead
        return None
    if summary is None:
        return None
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    out: dict[str, TopicInfo] = {}
    for cid, ch in summary.channels.items():
        schema = summary.schemas.get(ch.schema_id)
        qos = ch.metadata.get("offered_qos_profiles", "")
        prev = out.get(ch.topic)
        count = counts.get(cid, 0) + (prev.count if prev else 0)
        out[ch.topic] = TopicInfo(ch.topic, schema.name if schema else "", count, qos)
    stats = summary.statistics
    return out, (stats.message_start_time if stats else 0), (stats.message_end_time if stats else 0)


def _qos(text: str) -> list:
    if not text:
        return []
    try:
        from rosbags.rosbag2.metadata import parse_qos

        return list(parse_qos(text))
    except Exception:  # noqa: BLE001 - a profile we cannot parse is as good as none
        return []


class BagReader:
    """A rosbag2 bag (folder with metadata.yaml, or a bare .mcap / .db3 file), read once or many
    times; `report` collects what the last `records()` pass found."""

    def __init__(self, bag: Path | str, gap_s: float = GAP_S) -> None:
        self.bag = Path(bag)
        self.gap_s = gap_s
        self.report = ReadReport()
        if not self.bag.exists():
            raise BagError(f"bag {self.bag} does not exist")
        self._rosbags = None
        self._cut_files = False
        self._span: tuple[int, int] | None = (2**63, -1)  # log-time span, from the index
        self.files = self._files()
        self.topics: dict[str, TopicInfo] = self._topics()
        self._translations: dict | None = None  # topic -> schemas.Translation, built once

    # -- opening ---------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        if self.bag.is_file():
            return [self.bag]
        meta = self.bag / "metadata.yaml"
        if meta.is_file():
            import yaml

            try:
                info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
                files = [self.bag / p for p in info["relative_file_paths"]]
            except (yaml.YAMLError, KeyError, TypeError) as err:
                raise BagError(f"cannot read bag {self.bag}: metadata.yaml: {err}") from None
        else:
            files = sorted(self.bag.glob("*.mcap")) + sorted(self.bag.glob("*.db3"))
        if not files:
            raise BagError(f"cannot read bag {self.bag}: no metadata.yaml, .mcap or .db3 file")
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise BagError(f"cannot read bag {self.bag}: files {missing} are missing")
        return files

    @property
    def storage(self) -> str:
        return "sqlite3" if self.files[0].suffix == ".db3" else "mcap"

    def _topics(self) -> dict[str, TopicInfo]:
        if self.storage == "sqlite3":
            return self._sqlite_topics()
        merged: dict[str, TopicInfo] = {}
        for f in self.files:
            summary = _mcap_summary(f)
            if summary is not None:
                found, start, end = summary
                if found:
                    self._span = (min(self._span[0], start), max(self._span[1], end))
            else:  # cut short: the channels the stream declares, uncounted
                self._cut_files = True
                mcap = _streamed(f)
                found = {t: TopicInfo(t, m, -1, mcap.qos.get(t, ""))
                         for t, m in mcap.channels.values()}  # fmt: skip
            for name, info in found.items():
                prev = merged.get(name)
                count = -1 if info.count < 0 or (prev and prev.count < 0) else (
                    info.count + (prev.count if prev else 0))  # fmt: skip
                qos = info.offered_qos
                if prev is not None and not info.qos:  # parsed only where files disagree
                    qos = prev.offered_qos
                merged[name] = TopicInfo(name, info.msgtype, count, qos)
        return merged

    def _sqlite_topics(self) -> dict[str, TopicInfo]:
        from rosbags.rosbag2 import Reader, ReaderError

        try:
            reader = Reader(self.bag if self.bag.is_dir() else self.bag.parent)
            reader.open()
        except (ReaderError, OSError) as err:
            raise BagError(f"cannot read bag {self.bag}: {err}") from None
        self._rosbags = reader
        self._span = (reader.start_time, reader.end_time) if reader.message_count else (0, 0)
        out: dict[str, TopicInfo] = {}
        for c in reader.connections:
            out[c.topic] = TopicInfo(c.topic, c.msgtype, c.msgcount,
                                     list(c.ext.offered_qos_profiles))  # fmt: skip
        return out

    def translations(self) -> dict:
        """Topics recorded with a definition that differs from the installed one, with the
        translation `records()` applies to their bytes (`bags/schemas.py`; usually none)."""
        if self._translations is None:
            from vla_pruned_ros.bags import schemas
            from vla_pruned_ros.bags.types import typestore

            if self.storage == "sqlite3":
                stored = schemas.sqlite_definitions(self._rosbags.connections)
            else:
                stored = [d for f in self.files for d in _mcap_definitions(f)]
            self._translations = schemas.translations(self.bag, stored, typestore())
        return self._translations

    # -- reading ---------------------------------------------------------------------------
    def require(self, *topics: str) -> list[str]:
        """The absolute names of `topics`; a BagError naming those the bag lacks."""
        names = [absolute(t) for t in topics]
        missing = [t for t in names if t not in self.topics]
        if missing:
            raise BagError(f"{self.bag}: missing topics {missing}; the bag has "
                           f"{sorted(self.topics)}")  # fmt: skip
        return names

    def _raw(self) -> Iterator[tuple[str, str, int, memoryview]]:
        if self.storage == "sqlite3":
            from rosbags.rosbag2 import ReaderError

            try:
                for conn, log_ns, raw in self._rosbags.messages():
                    yield conn.topic, conn.msgtype, log_ns, raw
            except (ReaderError, Exception) as err:  # noqa: BLE001 - sqlite raises many kinds
                raise BagError(f"{self.bag}: cannot read messages: {err}") from None
            return
        for f in self.files:
            yield from _Mcap(f, self.report).messages()

    def records(
        self,
        topics: Iterable[str] | None = None,
        decode: bool | Iterable[str] = True,
        start_ns: int | None = None,
    ) -> Iterator[Record]:
        """Messages of `topics` (default: all) in file order, from log time `start_ns` on;
        decoded (all, or only the topics named in `decode`). Stamps are checked on every
        decoded topic into `self.report` (out of order, gaps). A topic recorded with an
        older definition of its type comes as the installed type's bytes (`translations`)."""
        from vla_pruned_ros.bags.types import typestore

        self.report = ReadReport()
        wanted = None if topics is None else {absolute(t) for t in topics}
        if decode is True or decode is False:
            decoded = wanted if decode else set()
        else:
            decoded = {absolute(t) for t in decode}
        store = typestore() if decoded is None or decoded else None  # its import costs ~0.5 s
        last: dict[str, tuple[int, int]] = {}  # topic -> (stamp of the latest, messages seen)
        gap_ns = int(self.gap_s * 1e9)
        translate = self.translations()
        for topic, msgtype, log_ns, raw in self._raw():
            if (wanted is not None and topic not in wanted) or (
                start_ns is not None and log_ns < start_ns
            ):
                continue
            if translate and topic in translate:
                raw = _translated(self.bag, translate[topic], raw, log_ns)
            self.report.messages += 1
            message, stamp = None, log_ns
            if decoded is None or topic in decoded:
                try:
                    message = store.deserialize_cdr(raw, msgtype)
                except KeyError:
                    raise BagError(f"{self.bag}: topic {topic}: cannot decode message type "
                                   f"{msgtype!r} (not a ROS 2 Kilted or vla_pruned_ros_msgs "
                                   "type)") from None  # fmt: skip
                except Exception as err:  # noqa: BLE001 - a bad CDR payload
                    at = f"a {msgtype} message at log time {log_ns / 1e9:.3f} s"
                    raise BagError(
                        f"{self.bag}: topic {topic}: {at} does not decode: {err}"
                    ) from None
                stamp, has_header = _stamp_ns(message, log_ns)
                prev = last.get(topic)
                if prev is not None:
                    if stamp < prev[0]:
                        self.report.out_of_order.append(
                            StampIssue(topic, prev[1], stamp / 1e9, prev[0] / 1e9)
                        )
                    elif has_header and stamp - prev[0] > gap_ns:
                        self.report.gaps.append(Gap(topic, prev[0] / 1e9, stamp / 1e9))
                count = prev[1] + 1 if prev else 1
                last[topic] = (max(stamp, prev[0]) if prev else stamp, count)
            yield Record(topic, msgtype, log_ns, stamp, raw, message)

    def span_ns(self) -> tuple[int, int]:
        """(first, last) log time in ns: from the bag's index, or by a pass over a file that
        has none (cut short)."""
        if self._cut_files or self._span is None or self._span[1] < 0:
            report = self.report
            times = [r.log_ns for r in self.records(decode=False)]
            self.report = report
            self._span = (min(times), max(times)) if times else (0, 0)
            self._cut_files = False
        return self._span

    def close(self) -> None:
        if self._rosbags is not None:
            self._rosbags.close()
            self._rosbags = None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


def reorder_by_stamp(
    items: Iterable[T],
    stamp: Callable[[T], float],
    window: float,
    on_late: Callable[[T, float], None] | None = None,
    barrier: Callable[[T], object] | None = None,
) -> Iterator[T]:
    """`items` sorted by `stamp` within a sliding `window` (a bounded buffer, so a long bag
    streams). An item older than one already released (more than `window` late) cannot be put
    in place: it is passed to `on_late(item, latest_released)` and yielded where it arrived.
    Items are never moved across a change of `barrier(item)` (an episode boundary)."""
    heap: list[tuple[float, int, T]] = []
    newest = released = -float("inf")
    group: object = object()
    for seq, item in enumerate(items):
        key = barrier(item) if barrier else None
        if key != group:
            while heap:
                yield heapq.heappop(heap)[2]
            newest = released = -float("inf")
            group = key
        s = stamp(item)
        if s < released:
            if on_late:
                on_late(item, released)
            yield item
            continue
        heapq.heappush(heap, (s, seq, item))
        newest = max(newest, s)
        while heap and heap[0][0] <= newest - window:
            s0, _, first = heapq.heappop(heap)
            released = s0
            yield first
    while heap:
        yield heapq.heappop(heap)[2]
