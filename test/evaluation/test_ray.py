"""The one parallel path on a real local Ray (2 CPUs, started once for the module): the same
tables as in process, a SIGKILLed worker retried without losing or duplicating an episode, a
failing cell reported while the rest completes, a folder of bags into one report, and an
unreachable cluster refused within seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from vla_pruned_ros.cli.eval import main as eval_main
from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_cells
from vla_pruned_ros.evaluation.parallel import ClusterUnavailable, Parallel, connect

ray = pytest.importorskip("ray")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bags"
KEEP = ("seed", "phrasing", "success", "unsafe", "collisions", "steps", "distance_to_goal")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from test_closed_loop import _tiny

    return _tiny(tmp_path_factory.mktemp("model") / "tiny")


def _episodes(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in KEEP if k in r} for r in records]


def _running_task_pids() -> list[int]:
    """Ray workers running one of our items now (Ray titles a busy worker 'ray::<function>')."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::_ray_call"):
            pids.append(int(entry.name))
    return pids


def test_sim_via_ray_equals_the_in_process_run(local_ray, tiny, tmp_path: Path) -> None:
    args = ["sim", "--task", "nav", "--model", tiny, "--episodes", "3", "--heldout-phrasing", "1",
            "--shard-episodes", "2"]  # fmt: skip
    assert eval_main([*args, "--json", str(tmp_path / "here.json")]) == 0
    assert eval_main([*args, "--ray", "--json", str(tmp_path / "ray.json")]) == 0
    here, there = (json.loads((tmp_path / f).read_text()) for f in ("here.json", "ray.json"))
    assert [e["seed"] for e in there["episodes"]] == [*heldout_seeds(0, 3), heldout_seeds(0, 1)[0]]
    assert _episodes(there["episodes"]) == _episodes(here["episodes"])
    assert there["summary"]["success"] == here["summary"]["success"]


def test_a_sweep_via_ray_equals_the_in_process_table(local_ray, tiny, tmp_path: Path) -> None:
    from vla_pruned_ros.evaluation.sweep import SweepConfig, run_sweep

    def sweep(ray_address: str, cells: str) -> dict:
        cfg = SweepConfig(model=tiny, tasks=["nav"], episodes=2, methods=["magnitude"],
                          patterns=["2:4"], ranks=[4], heldout_phrasing=1, shard_episodes=1,
                          ray=ray_address, artifacts_dir=str(tmp_path / "art"),
                          cells_dir=str(tmp_path / cells))  # fmt: skip
        return run_sweep(cfg, progress=False)

    here, there = sweep("", "here"), sweep("local", "ray")
    assert [v["name"] for v in there["variants"]] == ["dense", "magnitude_2:4", "magnitude_2:4_r4"]
    assert there["failed"] == [] and len(list((tmp_path / "ray").iterdir())) == 6
    drop = ("latency_ms",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in there["rows"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in here["rows"]
    ]
    for a, b in zip(there["variants"], here["variants"], strict=True):
        assert a["tasks"]["nav"]["episodes"] == b["tasks"]["nav"]["episodes"]


def test_a_killed_worker_is_retried_and_a_failing_cell_reported(local_ray, tiny) -> None:
    """SIGKILL a worker in the middle of an item: Ray re-runs the item, the episodes come back
    once each and equal to the in-process ones; a cell whose model is missing fails with its
    error and the other cell still completes."""
    jobs = [EvalJob("nav", tiny, s) for s in heldout_seeds(0, 4)]
    cells = {"good": jobs, "broken": [EvalJob("nav", tiny + "-missing", s) for s in
                                      heldout_seeds(0, 2)]}  # fmt: skip
    options = Parallel("local", shard_episodes=2, progress=False)
    killed: list[int] = []

    def kill_one() -> None:
        end = time.monotonic() + 120
        while time.monotonic() < end and not killed:
            pids = _running_task_pids()
            if pids:
                time.sleep(0.5)  # into the episode, not its first instruction
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    done = run_cells(cells, options)
    killer.join(timeout=1)
    assert killed, "no running Ray task was found to kill"
    assert (
        not Path(f"/proc/{killed[0]}").exists()
        or b"_ray_call" not in Path(f"/proc/{killed[0]}/cmdline").read_bytes()
    )
    assert done["good"].error is None
    here = run_cells({"good": jobs}, Parallel(progress=False))["good"]
    assert [r["seed"] for r in done["good"].records] == heldout_seeds(0, 4)
    assert _episodes(done["good"].records) == _episodes(here.records)
    assert "does not exist" in (done["broken"].error or "")


def test_a_folder_of_bags_evaluates_into_one_report(local_ray, tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    for name, source in (("a_nav", "nav"), ("b_manip", "manip"), ("c_nav", "nav")):
        shutil.copytree(FIXTURES / source, folder / name)
    out = tmp_path / "out" / "fleet.json"
    code = eval_main(["bag", str(folder), "--model", "embedded", "--json", str(out), "--ray"])
    assert code == 0
    result = json.loads(out.read_text())
    assert [Path(b["bag"]).name for b in result["bags"]] == ["a_nav", "b_manip", "c_nav"]
    assert [b["task"] for b in result["bags"]] == ["nav", "manip", "nav"]
    assert result["failed"] == {} and result["error"] is None
    total = result["models"]["embedded"]
    assert total["bags"] == 3
    assert total["steps"] == sum(b["models"]["embedded"]["steps"] for b in result["bags"]) > 60
    # the two copies of the nav bag give the same replay, wherever each ran
    a, c = (result["bags"][i]["models"]["embedded"]["vs_recorded"] for i in (0, 2))
    assert a == c
    md = out.with_suffix(".md").read_text()
    assert "# Offline replay of 3 bags" in md and md.count("![replay](") == 3


def test_an_unreachable_cluster_is_refused_within_seconds(capsys) -> None:
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        connect("127.0.0.1:9")
    code = eval_main(["sim", "--task", "nav", "--episodes", "1", "--ray", "ray://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach the Ray cluster at ray://127.0.0.1:9" in capsys.readouterr().err
    assert time.monotonic() - start < 15
