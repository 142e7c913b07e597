"""The safety gate inside the in-process closed loop (evaluation/gated_loop.py), on real MuJoCo
episodes driven by the shipped embedded model: the scene where the stop-and-hold gate let the
policy drive into the same obstacle again and again (issue 18) gets one touch with the
direction-aware zones."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from vla_pruned_ros.evaluation.closed_loop import EvalJob, heldout_seeds, run_episode
from vla_pruned_ros.evaluation.gated_loop import SimGate, gate_config
from vla_pruned_ros.monitor.detectors import robot_contacts
from vla_pruned_ros.sim import make_task
from vla_pruned_ros.sim.manip import HALF_BLOCK, TIP_R

REPEATING_SCENE = heldout_seeds(2, 1)[0]  # nav: 13 collisions under the stop gate when written


def test_direction_aware_gate_stops_repeated_collisions_on_the_same_scene() -> None:
    runs = {g: run_episode(EvalJob("nav", "embedded", REPEATING_SCENE, gate=g)) for g in
            ("stop", "direction")}  # fmt: skip
    assert runs["stop"]["collisions"] >= 3, "the scene no longer shows repeated collisions"
    assert runs["direction"]["collisions"] <= 1
    assert runs["direction"]["gate_changed"] > 0
    assert {r["gate"] for r in runs.values()} == {"stop", "direction"}


def test_gate_config_reads_the_task_yaml_and_sets_the_switch() -> None:
    limits, zones = gate_config("manip", "direction")
    assert zones.direction_aware and zones.holonomic
    assert limits.command_timeout_s == 0.0, "stream checks are off in a synchronous loop"
    assert not gate_config("nav", "stop")[1].direction_aware
    with pytest.raises(ValueError, match="gate mode"):
        gate_config("nav", "sometimes")


def test_the_gate_blocks_the_action_toward_a_touched_obstacle() -> None:
    with make_task("manip") as task:
        task.reset(heldout_seeds(0, 1)[0])
        gate = SimGate(task, "direction")
        tip = task.tip()
        # a contact right of the pusher, as if it had just touched the obstacle there
        gate.monitor.on_contacts([("pusher", "obstacle", 1.0)], task.sim_time,
                                 points=[(float(tip[0]) + 0.025, float(tip[1]))])  # fmt: skip
        assert gate.filter([0.2, 0.0]).tolist() == [0.0, 0.0]
        assert gate.filter([-0.2, 0.0]).tolist() == [-0.2, 0.0]


def test_a_bump_gone_by_the_step_end_is_seen_and_blocks_the_way_back() -> None:
    """The pusher coasts into a block and backs off within one control step: at the step's end
    nothing touches (all the gate was fed before), but the step's contacts hold the bump with
    its point and normal, the gate counts it, and the way back into the block stays blocked."""
    with make_task("manip") as task:
        task.reset(heldout_seeds(0, 1)[0])
        gate = SimGate(task, "direction")
        other = next(c for c in ("red", "green", "blue") if c != task.target)
        adr = task._block_qpos[other]
        task.data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)  # a face toward -x
        tip = task.block_xy(other) - (HALF_BLOCK + TIP_R + 0.001, 0.0)  # 1 mm west of it
        task.data.qpos[task._tip_qpos] = tip
        task.data.qvel[task._tip_dof] = (1.0, 0.0)  # coasting east, commanded back west
        mujoco.mj_forward(task.model, task.data)
        task.step(np.array([-0.1, 0.0]))
        gate.observe()
        at_end = robot_contacts(task.contacts(), task.robot_bodies, task.allowed_contacts())
        assert at_end == [], "the bump should be over by the step's end"
        (bump,) = [c for c in task.step_contacts if f"block_{other}" in (c.body, c.other)]
        assert bump.force > 0.1
        assert gate.monitor.episode.counts["collision"] == 1
        creep = gate.monitor.zones.config.contact_creep_speed  # pressing on gently at most
        assert gate.filter(np.array([0.2, 0.0]))[0] == pytest.approx(creep, abs=1e-9)
        assert creep < 0.2, "the creep must be well below the command it cuts"
        assert gate.filter(np.array([0.0, 0.2])).tolist() == [0.0, 0.2], "along its face"
        assert gate.filter(np.array([-0.2, 0.0])).tolist() == [-0.2, 0.0]
