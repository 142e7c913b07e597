"""`vla-eval bag`: the committed fixture bags replayed offline through real models, and the clear
errors a broken bag gives (with the results gathered before the problem still written)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bag_builder import write_bag  # noqa: E402

from vla_pruned_ros.bags.reader import BagError, BagReader  # noqa: E402
from vla_pruned_ros.evaluation.bag_replay import evaluate_bag  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bags"
LIVE_TOLERANCE = 1e-4  # max |offline - recorded| per action element for the model that drove it


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.eval", "bag", *args],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def gluestick_artifacts(tmp_path_factory) -> dict[str, Path]:
    from vla_pruned_ros.compression import gluestick, prune
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import save_embedded_artifact

    root = tmp_path_factory.mktemp("artifacts")
    dense = load_embedded()
    pruned = prune(dense, "magnitude", "2:4")
    return {
        "pruned": save_embedded_artifact(pruned, root / "pruned"),
        "r32": save_embedded_artifact(gluestick(dense, pruned, 32), root / "r32"),
    }


def test_fixture_bags_are_small_and_complete() -> None:
    total = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    assert total <= 10 * 1024 * 1024
    for task in ("nav", "manip"):
        meta = (FIXTURES / task / "metadata.yaml").read_text()
        for topic in ("/camera/image_raw", "/instruction", "/vla/action", "/cmd_vel",
                      "/contacts", "/episode", "/clock"):  # fmt: skip
            assert f"name: {topic}\n" in meta, (task, topic)


@pytest.mark.parametrize("task", ["nav", "manip"])
def test_offline_replay_reproduces_the_live_actions_and_ranks_compression(
    task, gluestick_artifacts
) -> None:
    models = ["embedded", str(gluestick_artifacts["pruned"]), str(gluestick_artifacts["r32"])]
    result = evaluate_bag(FIXTURES / task, models, progress=False)
    assert result["task"] == task and result["error"] is None
    dense, pruned, r32 = (result["models"][m] for m in models)
    assert dense["steps"] == result["recorded_actions"] - result["unmatched_actions"] > 20
    # The dense model drove the recording: offline it gives back the recorded actions.
    assert dense["vs_recorded"]["mse"] < LIVE_TOLERANCE**2
    assert dense["vs_recorded"]["direction_agreement"] == 1.0
    # Compression moves the actions; GLUESTICK moves them back towards the dense ones.
    assert pruned["vs_reference"]["mse"] > 0
    assert r32["vs_reference"]["mse"] < pruned["vs_reference"]["mse"]
    assert len(dense["per_episode"]) == 2
    assert all(e["episode"].startswith(f"{task}-10000") for e in dense["per_episode"])


def test_cli_writes_json_markdown_and_plot(tmp_path, gluestick_artifacts) -> None:
    done = _eval(
        str(FIXTURES / "nav"),
        "--model",
        "embedded",
        "--model",
        str(gluestick_artifacts["r32"]),
        "--json",
        str(tmp_path / "r.json"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["models"]) == {"embedded", str(gluestick_artifacts["r32"])}
    assert "| `embedded` | dense |" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_a_truncated_bag_names_the_problem_and_keeps_what_was_read(tmp_path) -> None:
    bag = tmp_path / "cut"
    shutil.copytree(FIXTURES / "manip", bag)
    data = (bag / "manip.mcap").read_bytes()
    # cut inside the last chunk, so the chunks before it stay readable
    (bag / "manip.mcap").write_bytes(data[: _last_chunk_middle(data)])
    done = _eval(str(bag), "--model", "embedded", "--json", str(tmp_path / "cut.json"))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "truncated or corrupt" in done.stderr
    result = json.loads((tmp_path / "cut.json").read_text())
    assert "truncated or corrupt" in result["error"]
    recorded = BagReader(FIXTURES / "manip").topics["/vla/action"].count
    # the whole messages of the cut chunk are kept too, not only the chunks before it
    with BagReader(bag) as reader:
        before = sum(1 for r in reader.records(["/vla/action"], decode=False)
                     if r.log_ns < _chunk_start_times(data)[-1])  # fmt: skip
    assert before < result["recorded_actions"] < recorded
    assert 0 < result["models"]["embedded"]["steps"] < recorded


def _chunk_start_times(data: bytes) -> list[int]:
    return [start for _pos, _length, start in _chunk_records(data)]


def _chunk_records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, first log time) of each MCAP chunk (records: opcode u8, length u64)."""
    pos, chunks = 8, []
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode == 0x06:
            chunks.append((pos, length, struct.unpack_from("<Q", data, pos + 9)[0]))
        pos += 9 + length
    return chunks


def _last_chunk_middle(data: bytes) -> int:
    """The byte halfway through the file's last MCAP chunk (records: opcode u8, length u64)."""
    pos, chunks = 8, []
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode == 0x06:
            chunks.append(pos + 9 + length // 2)
        pos += 9 + length
    assert len(chunks) >= 2, "the fixture needs a complete chunk before the cut"
    return chunks[-1]


def test_broken_bags_give_clear_errors(tmp_path) -> None:
    with pytest.raises(BagError, match=r"missing topics \['/vla/action'\]"):
        evaluate_bag(write_bag(tmp_path / "noact", [1.0, 1.1], with_action=False),
                     ["embedded"], progress=False)  # fmt: skip
    # stamps that go backwards no longer stop the replay: sorted, reported, both steps kept
    result = evaluate_bag(write_bag(tmp_path / "order", [2.0, 1.0]), ["embedded"],
                          progress=False)  # fmt: skip
    assert result["error"] is None and result["models"]["embedded"]["steps"] == 2
    assert result["stamps"]["out_of_order"][0]["topic"] == "/camera/image_raw"
    with pytest.raises(BagError, match="cannot import message type 'foo_msgs/msg/Bar'"):
        evaluate_bag(write_bag(tmp_path / "type", [1.0], camera_type="foo_msgs/msg/Bar"),
                     ["embedded"], progress=False)  # fmt: skip
    with pytest.raises(BagError, match="does not exist"):
        evaluate_bag(tmp_path / "nothing", ["embedded"], progress=False)
