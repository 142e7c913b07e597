"""Demonstration collection: noisy expert (DART) and on-policy expert labels (DAgger), and the
aggregation of both datasets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vla_pruned_ros.training.collect import CollectConfig, collect
from vla_pruned_ros.training.dataset import Demonstrations


def test_on_policy_collection_follows_the_policy_and_keeps_expert_labels() -> None:
    clean = collect(CollectConfig("manip", 2, noisy_fraction=0.0))
    assert clean.meta["expert_success_rate"] == 1.0
    # the expert drives every step: exactly the clean expert data
    led = collect(CollectConfig("manip", 2, noisy_fraction=0.0, policy="embedded",
                                expert_share=1.0))  # fmt: skip
    assert np.array_equal(led.images, clean.images) and np.array_equal(led.actions, clean.actions)
    # the policy drives: other states, still labelled by the expert (bounded, finite actions),
    # and as many labels as frames
    driven = collect(CollectConfig("manip", 2, policy="embedded"))
    assert len(driven.images) == len(driven.actions) == len(driven.episode_ids)
    n = min(len(driven), len(clean))
    assert not np.array_equal(driven.images[:n], clean.images[:n])
    assert np.isfinite(driven.actions).all()
    assert driven.meta["policy"] == "embedded"


def _demos(task: str, texts: list[str], episodes: int) -> Demonstrations:
    n = episodes * 3
    return Demonstrations(
        task,
        np.zeros((n, 4, 4, 3), np.uint8),
        np.arange(n, dtype=np.float32).reshape(n, 1),
        np.arange(n, dtype=np.int32) % len(texts),
        np.repeat(np.arange(episodes, dtype=np.int32), 3),
        texts,
    )


def test_merged_renumbers_episodes_and_reindexes_instructions() -> None:
    a = _demos("manip", ["push red", "push blue"], 2)
    b = _demos("manip", ["push blue", "push green"], 2)
    m = a.merged(b)
    assert m.instructions == ["push red", "push blue", "push green"]
    texts = [m.instructions[i] for i in m.instruction_ids]
    assert texts == [a.instructions[i] for i in a.instruction_ids] + [
        b.instructions[i] for i in b.instruction_ids
    ]
    assert sorted(set(m.episode_ids.tolist())) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="cannot merge"):
        a.merged(_demos("nav", ["go"], 1))


def test_vla_train_refuses_cached_demonstrations_of_another_expert(tmp_path, capsys) -> None:
    from vla_pruned_ros.cli.train import main

    data = tmp_path / "data"
    _demos("nav", ["go to red"], 1).save(data / "nav.safetensors")
    routing = _demos("manip", ["push red"], 1)
    routing.meta = {"expert": "routing"}
    routing.save(data / "manip.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(tmp_path), "--steps", "0"])  # the default: the smooth expert
    assert exit_info.value.code == 2
    assert "holds demonstrations of the 'routing' expert, not 'smooth'" in capsys.readouterr().err


def test_vla_train_refuses_cached_demonstrations_from_another_camera(tmp_path, capsys) -> None:
    """Frames rendered with supersampling look different at edges: a model trained on one
    camera and evaluated on the other would meet images it never saw."""
    from vla_pruned_ros.cli.train import main

    data = tmp_path / "data"
    nav = _demos("nav", ["go to red"], 1)
    nav.meta = {"supersample": 2}  # the camera asked for: accepted
    nav.save(data / "nav.safetensors")
    smooth = _demos("manip", ["push red"], 1)
    smooth.meta = {"expert": "smooth", "supersample": 4}
    smooth.save(data / "manip.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(tmp_path), "--steps", "0", "--supersample", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "manip.safetensors holds frames rendered with supersampling 4, not 2:" in err
    assert "expert" not in err.split("holds")[1]


def test_collection_records_the_scene_state_of_every_frame(tmp_path) -> None:
    from vla_pruned_ros.sim import make_task

    demos = collect(CollectConfig("manip", 2, noisy_fraction=0.0))
    assert demos.states.shape == (len(demos), 14) and demos.states.dtype == np.float32
    with make_task("manip") as task:
        task.reset(0)
        assert np.array_equal(demos.states[0], task.scene_state())
    demos.save(tmp_path / "manip.safetensors")
    loaded = Demonstrations.load(tmp_path / "manip.safetensors")
    assert np.array_equal(loaded.states, demos.states)
    assert np.array_equal(loaded.merged(demos).states, np.concatenate([demos.states] * 2))
    stateless = dataclasses.replace(demos, states=None)
    assert loaded.merged(stateless).states is None  # some frames would lack one
    assert collect(CollectConfig("nav", 1)).states is None  # nav defines none


def test_vla_train_refuses_cached_demonstrations_without_states_for_the_state_loss(
    tmp_path, capsys
) -> None:
    from vla_pruned_ros.cli.train import main

    data = tmp_path / "data"
    _demos("nav", ["go to red"], 1).save(data / "nav.safetensors")  # nav has no state: fine
    old = _demos("manip", ["push red"], 1)
    old.meta = {"expert": "smooth"}
    old.save(data / "manip.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(tmp_path), "--steps", "0", "--state-loss", "1"])
    assert exit_info.value.code == 2
    assert "manip.safetensors holds frames without scene states" in capsys.readouterr().err


def _same(a: Demonstrations, b: Demonstrations) -> bool:
    arrays = ("images", "actions", "instruction_ids", "episode_ids", "states")
    return (all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays)
            and a.instructions == b.instructions and a.meta == b.meta)  # fmt: skip


def test_collection_gives_the_same_episodes_however_it_runs() -> None:
    """Through evaluation/parallel.py: one item of two episodes, two items of one (after
    another configuration used this process's simulator), and two Ray workers, seed for seed.
    (Checked once against the removed multiprocessing pool: equal, 4 manip + 4 nav episodes.)"""
    from vla_pruned_ros.evaluation.parallel import Parallel

    cfg = CollectConfig("manip", 2, first_seed=5)
    whole = collect(cfg, Parallel(shard_episodes=2, progress=False))
    assert collect(CollectConfig("nav", 1), Parallel(progress=False)).task == "nav"
    assert _same(collect(cfg, Parallel(shard_episodes=1, progress=False)), whole)
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert _same(collect(cfg, Parallel("local", shard_episodes=1, progress=False)), whole)
    finally:
        ray.shutdown()
