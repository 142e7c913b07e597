"""The one bag reader on real files: chunk CRCs refuse a damaged bag with the chunk named, a
file cut mid-chunk keeps every whole message before the cut, sqlite3 bags read, and the
stamps report lists disorder and gaps (evaluation keeps going through both)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bag_builder import ACTION, CAMERA, INSTRUCTION, write_bag  # noqa: E402

from vla_pruned_ros.bags.reader import BagReader, CorruptChunk, reorder_by_stamp  # noqa: E402
from vla_pruned_ros.evaluation.bag_replay import evaluate_bag  # noqa: E402
from vla_pruned_ros.evaluation.bag_report import markdown  # noqa: E402

FRAMES = [0.1 * i for i in range(200)]  # 200 frames of 12 KiB: three 1 MiB chunks


@pytest.fixture(scope="module")
def policy_loader():
    from vla_pruned_ros.models.registry import load_policy

    cache: dict = {}
    return lambda name, task: cache.setdefault((name, task), load_policy(name, task))


def _mcap(bag: Path) -> Path:
    (file,) = bag.glob("*.mcap")
    return file


def _chunks(file: Path):
    with file.open("rb") as f:
        return make_reader(f).get_summary().chunk_indexes


def test_our_bags_carry_chunk_crcs_and_rosbags_reads_them(tmp_path) -> None:
    bag = write_bag(tmp_path / "ours", FRAMES)
    with Reader(bag) as reader:  # rosbags, independently
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {CAMERA: 200, INSTRUCTION: 1, ACTION: 200}
    reader = BagReader(bag)
    records = list(reader.records())
    assert len(records) == 401 and reader.report.crc_checked_chunks == len(_chunks(_mcap(bag))) >= 3
    assert reader.report.crc_unchecked_chunks == 0
    frame = next(r for r in records if r.topic == CAMERA)
    assert frame.stamp_ns == 0 and frame.message.width == 64
    # rosbags' writer stores CRC 0: read, counted as unchecked
    theirs = BagReader(write_bag(tmp_path / "theirs", FRAMES, writer="rosbags"))
    assert sum(1 for _ in theirs.records()) == 401
    assert theirs.report.crc_checked_chunks == 0 and theirs.report.crc_unchecked_chunks >= 3


def test_the_chunk_size_is_the_writers_argument(tmp_path) -> None:
    """Smaller chunks (the fixture bags' 256 KiB) cut the same messages into more CRC'd chunks
    that read back whole; a size of 0 is refused before a file is made."""
    default = _chunks(_mcap(write_bag(tmp_path / "default", FRAMES)))
    small = write_bag(tmp_path / "small", FRAMES, chunk_bytes=128 * 1024)
    assert len(_chunks(_mcap(small))) > 3 * len(default)
    reader = BagReader(small)
    assert sum(1 for _ in reader.records()) == 401
    assert reader.report.crc_checked_chunks == len(_chunks(_mcap(small)))
    with pytest.raises(ValueError, match="chunk_bytes must be > 0"):
        write_bag(tmp_path / "zero", FRAMES, chunk_bytes=0)
    assert not (tmp_path / "zero").exists()


def test_a_corrupted_chunk_is_refused_with_the_chunk_named(tmp_path, policy_loader) -> None:
    bag = write_bag(tmp_path / "bad", FRAMES)
    file = _mcap(bag)
    second = _chunks(file)[1]
    data = bytearray(file.read_bytes())
    middle = second.chunk_start_offset + second.chunk_length // 2
    data[middle : middle + 1024] = bytes(1024)  # 1 KiB of an image zeroed
    file.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk) as err:
        evaluate_bag(bag, ["embedded"], progress=False, loader=policy_loader)
    assert f"chunk 1 at byte {second.chunk_start_offset}" in str(err.value)
    assert "fails its CRC check" in str(err.value)
    assert CAMERA in err.value.topics and err.value.index == 1


@pytest.mark.parametrize("compression", ["", "zstd"])
def test_a_bag_cut_mid_chunk_keeps_every_whole_message_before_the_cut(
    tmp_path, compression
) -> None:
    bag = write_bag(tmp_path / "cut", FRAMES, compression=compression)
    file = _mcap(bag)
    with file.open("rb") as f:
        logs = [m.log_time for _s, _c, m in make_reader(f).iter_messages()]
    last = _chunks(file)[-1]
    before = sum(1 for t in logs if t < last.message_start_time)
    in_last = len(logs) - before
    cut = last.chunk_start_offset + last.chunk_length // 2
    file.write_bytes(file.read_bytes()[:cut])
    reader = BagReader(bag)
    kept = [r.log_ns for r in reader.records()]
    assert kept == logs[: len(kept)], "salvaged messages are not the file's first ones"
    assert "truncated at byte" in reader.report.truncated and "chunk 2" in reader.report.truncated
    if compression == "":
        # each message record in the chunk: 9 header + 22 fixed + payload bytes
        sizes = [len(r.raw) + 31 for r in BagReader(write_bag(tmp_path / "ref", FRAMES)).records()]
        data_start = last.chunk_start_offset + 9 + 8 + 8 + 8 + 4 + 4 + 8
        end, whole = data_start, 0
        for size in sizes[before:]:
            end += size
            if end > cut:
                break
            whole += 1
        assert len(kept) == before + whole and 0 < whole < in_last
    else:  # zstd: the decompressible prefix of the cut chunk is kept
        assert before < len(kept) < len(logs)


def test_out_of_order_stamps_and_a_gap_are_evaluated_and_reported(tmp_path, policy_loader) -> None:
    stamps = [0.1 * i for i in range(10)] + [0.85] + [4.0 + 0.1 * i for i in range(10)]
    stamps[8], stamps[9] = 0.9, 0.8  # swapped pair; 0.85 after 0.9; then a 3.1 s silence
    bag = write_bag(tmp_path / "order", stamps, writer="rosbags")
    result = evaluate_bag(bag, ["embedded"], progress=False, loader=policy_loader)
    assert result["error"] is None
    assert result["models"]["embedded"]["steps"] == len(stamps)
    disorder = [d for d in result["stamps"]["out_of_order"] if d["topic"] == CAMERA]
    assert [(round(d["stamp_s"], 2), round(d["previous_s"], 2)) for d in disorder] == [
        (0.8, 0.9), (0.85, 0.9)]  # fmt: skip
    gaps = [g for g in result["stamps"]["gaps"] if g["topic"] == CAMERA]
    assert len(gaps) == 1 and gaps[0]["start_s"] == pytest.approx(0.9)
    assert gaps[0]["seconds"] == pytest.approx(3.1)
    order = [s["stamp"] for s in result["models"]["embedded"]["per_step"]]
    assert order == sorted(order), "steps were not put back in stamp order"
    assert result["stamps"]["late_steps"] == []
    assert len(result["stamps"]["out_of_order"]) == 4 and len(result["stamps"]["gaps"]) == 2
    text = markdown(result)  # camera and action topics both
    assert "Out-of-order stamps: 4: /camera/image_raw 0.800 s after 0.900 s" in text
    assert "Gaps in the recording: 2: /camera/image_raw 0.900-4.000 s (3.1 s)" in text


def test_steps_later_than_the_window_are_reported_not_dropped() -> None:
    late: list = []
    out = list(reorder_by_stamp([1.0, 3.0, 5.0, 2.5, 5.5], float, 1.0,
                                lambda item, after: late.append((item, after))))  # fmt: skip
    assert sorted(out) == [1.0, 2.5, 3.0, 5.0, 5.5] and late == [(2.5, 3.0)]
    # never across a barrier (an episode change)
    grouped = list(reorder_by_stamp([(0, 2.0), (1, 1.0)], lambda x: x[1], 5.0,
                                    barrier=lambda x: x[0]))  # fmt: skip
    assert grouped == [(0, 2.0), (1, 1.0)]


def test_a_sqlite3_bag_reads_and_evaluates(tmp_path, policy_loader) -> None:
    bag = write_bag(tmp_path / "db", FRAMES[:20], storage="sqlite3")
    assert list(bag.glob("*.db3"))
    reader = BagReader(bag)
    assert reader.storage == "sqlite3" and reader.topics[CAMERA].count == 20
    frames = [r.message for r in reader.records([CAMERA])]
    assert [int(np.asarray(f.data)[0]) for f in frames] == [(40 + 7 * i) % 256 for i in range(20)]
    result = evaluate_bag(bag, ["embedded"], progress=False, loader=policy_loader)
    assert result["models"]["embedded"]["steps"] == 20 and result["error"] is None
