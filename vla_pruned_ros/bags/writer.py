"""The one bag writer: rosbag2 folders (metadata.yaml, version 9) whose MCAP file is written by
the `mcap` library with a CRC over every chunk, so a damaged chunk is found on reading instead of
giving a silently wrong evaluation (rosbags' own MCAP writer stores CRC 0). sqlite3 bags go
through rosbags unchanged. Used by the recorder (`bags/record.py`) and the fixture script.

    with open_writer(path) as writer:
        conn = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image",
                                     typestore=typestore())
        writer.write(conn, log_time_ns, cdr_bytes)
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from mcap.writer import CompressionType
from mcap.writer import Writer as McapFileWriter
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
COMPRESSIONS = {"": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}
# 1 MiB chunks as rosbag2 writes them: a cut file loses at most the tail of one chunk.
CHUNK_BYTES = 1024 * 1024


class McapStorage:
    """rosbags' storage-writer protocol on the `mcap` library: ros2 profile, ros2msg schemas,
    cdr channels with their offered QoS, the rosbag2 metadata record, chunk CRCs."""

    compression = ""
    chunk_bytes = CHUNK_BYTES

    def __init__(self, path: Path, compression: CompressionMode) -> None:
        self.path = path / f"{path.name}.mcap"
        self._file = self.path.open("xb")
        kind = "zstd" if compression == CompressionMode.STORAGE else self.compression
        self._mcap = McapFileWriter(self._file, chunk_size=self.chunk_bytes,
                                    compression=COMPRESSIONS[kind], enable_crcs=True)  # fmt: skip
        self._mcap.start(profile="ros2", library=f"vla_pruned_ros (mcap {version('mcap')})")
        self._schemas: dict[str, int] = {}
        self._channels: dict[int, int] = {}

    def add_msgtype(self, connection: Connection) -> None:
        fmt = "ros2msg" if connection.msgdef.format == MessageDefinitionFormat.MSG else "ros2idl"
        self._schemas[connection.msgtype] = self._mcap.register_schema(
            connection.msgtype, fmt, connection.msgdef.data.encode()
        )

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        self._channels[connection.id] = self._mcap.register_channel(
            connection.topic,
            connection.ext.serialization_format,
            self._schemas[connection.msgtype],
            {"offered_qos_profiles": offered_qos_profiles},
        )

    def write(self, connection: Connection, timestamp: int, data: bytes | memoryview) -> None:
        self._mcap.add_message(self._channels[connection.id], timestamp, bytes(data), timestamp)

    def close(self, version: int, metadata: str) -> None:
        _ = version
        self._mcap.add_metadata("rosbag2", {"serialized_metadata": metadata})
        self._mcap.finish()
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class BagWriter(Writer):
    """rosbags' rosbag2 writer (connections, metadata.yaml) with MCAP storage on `mcap`."""

    def __init__(
        self, path: Path | str, storage: str = "mcap", chunk_compression: str = "",
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:  # fmt: skip
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, not {storage!r}")
        if chunk_compression not in COMPRESSIONS:
            raise ValueError(f"chunk compression must be one of {sorted(COMPRESSIONS)}")
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be > 0, not {chunk_bytes}")
        super().__init__(path, version=9, storage_plugin=STORAGES[storage])
        fields = {"compression": chunk_compression, "chunk_bytes": chunk_bytes}
        storage_class = type("McapStorage_", (McapStorage,), fields)
        self.STORAGE_PLUGINS = {StoragePlugin.MCAP: storage_class,
                                StoragePlugin.SQLITE3: Sqlite3Writer}  # fmt: skip

    def __enter__(self) -> BagWriter:
        if self.storage is None:
            self.open()
        return self


def open_writer(path: Path | str, storage: str = "mcap", chunk_compression: str = "",
                chunk_bytes: int = CHUNK_BYTES) -> BagWriter:  # fmt: skip
    """A new bag folder at `path` (which must not exist), open for writing; MCAP chunks of
    `chunk_bytes` (a cut file loses at most the tail of one)."""
    writer = BagWriter(path, storage, chunk_compression, chunk_bytes)
    writer.open()
    return writer
