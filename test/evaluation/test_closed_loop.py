"""The closed-loop harness runs real episodes with a real (tiny, untrained) model."""

from __future__ import annotations

from pathlib import Path

import torch

from vla_pruned_ros.cli.eval import evaluate
from vla_pruned_ros.cli.eval import main as eval_main
from vla_pruned_ros.cli.train import model_config
from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_jobs
from vla_pruned_ros.models.embedded import EmbeddedVLA, save_embedded
from vla_pruned_ros.sim.instructions import HELD_OUT_SEED_START


def _tiny_config():
    cfg = model_config()
    return type(cfg)(**{**cfg.__dict__, "text_layers": 1, "channels": (8, 8, 8)})


def _tiny(folder: Path) -> str:
    torch.manual_seed(0)
    save_embedded(EmbeddedVLA.from_minilm(_tiny_config()), folder)
    return str(folder)


def test_episodes_run_to_the_end_and_report_everything(tmp_path: Path) -> None:
    model = _tiny(tmp_path / "tiny")
    seeds = heldout_seeds(0, 2)
    assert all(s >= HELD_OUT_SEED_START for s in seeds)
    jobs = [EvalJob("nav", model, s) for s in seeds] + [
        EvalJob("manip", model, seeds[0], "heldout")
    ]
    records = list(run_jobs(jobs))
    assert [r["task"] for r in records] == ["nav", "nav", "manip"]
    for r in records:
        assert isinstance(r["success"], bool) and isinstance(r["unsafe"], bool)
        assert len(r["step_latency_ms"]) == r["steps"] or not r["success"]
        assert r["split"].startswith("heldout_scene")
    assert records[2]["split"] == "heldout_scene+heldout_phrasing"


def test_evaluate_summarises_both_phrasing_splits(tmp_path: Path) -> None:
    result = evaluate("nav", _tiny(tmp_path / "tiny"), episodes=2, seed=5, heldout_phrasing=1)
    assert result["summary"]["episodes"] == 2
    assert result["summary"]["heldout_phrasing"]["episodes"] == 1
    assert len(result["episodes"]) == 3
    params = sum(t.numel() for t in EmbeddedVLA.from_minilm(_tiny_config()).state_dict().values())
    assert result["summary"]["model_memory_bytes"] == 4 * params  # fp32, frozen table included


def test_evaluation_renders_with_the_camera_asked_for(tmp_path: Path) -> None:
    """A model trained on supersampled frames is evaluated on supersampled frames: the flag
    reaches the worker's task, and the result says which camera it used."""
    from vla_pruned_ros.evaluation.closed_loop import _policy_and_task
    from vla_pruned_ros.sim.base import SUPERSAMPLE

    model = _tiny(tmp_path / "tiny")
    result = evaluate("nav", model, episodes=1, seed=5, heldout_phrasing=0,
                      supersample=2)  # fmt: skip
    assert result["supersample"] == 2 and result["summary"]["episodes"] == 1
    assert _policy_and_task(EvalJob("nav", model, 0, supersample=2))[1].render_size == 128
    assert _policy_and_task(EvalJob("nav", model, 0))[1].supersample == SUPERSAMPLE
    assert evaluate("nav", model, 1, 5, 0)["supersample"] == SUPERSAMPLE


def test_a_missing_model_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = eval_main(["sim", "--task", "nav", "--model", str(tmp_path / "none"),
                      "--episodes", "1"])  # fmt: skip
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_adapter_and_runtime_mode_reach_the_loader(tmp_path: Path, capsys) -> None:
    """EvalJob's adapter and mode go to load_policy: the packed mode holds a pruned artifact in
    less memory than materialized weights, and `vla-eval sim` passes --mode and --adapter on."""
    from vla_pruned_ros.compression import prune
    from vla_pruned_ros.evaluation.closed_loop import _policy_and_task
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import save_embedded_artifact

    tiny = Path(_tiny(tmp_path / "tiny"))
    art = str(save_embedded_artifact(prune(load_embedded(tiny), "magnitude", "2:4"),
                                     tmp_path / "art", tiny))  # fmt: skip
    packed = _policy_and_task(EvalJob("nav", art, 0, mode="packed"))[0].info.memory_bytes
    dense = _policy_and_task(EvalJob("nav", art, 0, mode="materialize"))[0].info.memory_bytes
    assert packed < dense
    base = ["sim", "--task", "nav", "--model", art, "--episodes", "1", "--heldout-phrasing", "0"]
    assert eval_main([*base, "--mode", "bogus"]) == 2
    assert "unknown runtime mode 'bogus'" in capsys.readouterr().err
    assert eval_main([*base, "--adapter", "no_such_module_here:Policy"]) == 2
    assert "no_such_module_here" in capsys.readouterr().err


def test_a_model_that_fails_to_load_leaves_the_worker_usable(tmp_path: Path) -> None:
    """A worker process keeps its simulator and policy between shards. A shard whose model does
    not load must not leave the previous shard's closed simulator behind for the next one (it
    did: on Ray a good cell's retry on that worker failed with 'render cannot be called after
    close')."""
    import pytest

    from vla_pruned_ros.evaluation.closed_loop import run_shard

    model = _tiny(tmp_path / "tiny")
    seed = heldout_seeds(0, 1)[0]
    first = run_shard([EvalJob("nav", model, seed)])
    with pytest.raises(Exception, match="does not exist"):
        run_shard([EvalJob("nav", str(tmp_path / "missing"), seed)])
    again = run_shard([EvalJob("nav", model, seed)])
    drop = ("step_latency_ms",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == [
        {k: v for k, v in r.items() if k not in drop} for r in first]  # fmt: skip
