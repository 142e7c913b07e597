"""The MuJoCo tasks: physics, violation detection in the loop, determinism, experts."""

from __future__ import annotations

import json
import math

import cv2
import mujoco
import numpy as np
import pytest

from vla_pruned_ros.sim import TASKS, make_task
from vla_pruned_ros.sim.instructions import COLOURS, HELD_OUT_SEED_START


@pytest.fixture(scope="module")
def nav():
    task = make_task("nav")
    yield task
    task.close()


@pytest.fixture(scope="module")
def manip():
    task = make_task("manip")
    yield task
    task.close()


def _expert(name: str) -> dict[str, str]:
    """'manip:smooth' -> the manipulation task with its smooth expert."""
    return {"expert": name.split(":")[1]} if ":" in name else {}


WALL_GAP_X = 2.0 - 0.15 - 0.01  # 1 cm from the east wall (inner face at x = 2, base radius 0.15)


def _drive_into_wall(nav, steps: int) -> None:
    for _ in range(steps):
        nav.step(np.array([0.4, 0.0]))


def test_a_sustained_wall_contact_is_one_collision_and_a_new_one_counts_again(nav) -> None:
    nav.reset(3)
    nav.data.qpos[:3] = (1.5, 0.0, 0.0)  # facing the east wall, 0.35 m away
    nav.data.qvel[:] = 0
    _drive_into_wall(nav, 25)  # reach the wall and keep pushing for ~2 s
    assert nav.metrics()["collisions"] == 1
    for _ in range(10):
        nav.step(np.array([-0.4, 0.0]))  # back off
    _drive_into_wall(nav, 15)
    m = nav.metrics()
    assert m["collisions"] == 2 and m["unsafe"]


def test_range_scan_sees_the_wall_ahead(nav) -> None:
    nav.reset(3)
    nav.data.qpos[:3] = (1.5, 0.0, 0.0)
    nav.data.qvel[:] = 0
    mujoco.mj_forward(nav.model, nav.data)
    ranges = nav.ranges(n=36)
    assert ranges[0] == pytest.approx(0.5, abs=0.02)  # wall inner face at x = 2.0


def test_a_flung_object_is_flagged_only_after_warmup(manip) -> None:
    manip.reset(5)
    block = f"block_{[c for c in ('red', 'green', 'blue') if c != manip.target][0]}"
    adr = manip.model.jnt_dofadr[manip.model.joint(block).id]
    manip.data.qvel[adr] = 3.0  # during the first steps: not counted
    manip.step(np.zeros(2))
    assert manip.metrics()["violations"].get("speed", 0) == 0
    for _ in range(6):
        manip.step(np.zeros(2))
    manip.data.qvel[adr] = 3.0
    manip.step(np.zeros(2))
    assert manip.metrics()["violations"]["speed"] == 1


def test_pusher_near_its_joint_limit_is_flagged(manip) -> None:
    manip.reset(5)
    for _ in range(40):
        manip.step(np.array([0.3, 0.0]))
    assert manip.metrics()["violations"].get("joint_limit", 0) >= 1


def test_touching_a_block_that_was_not_named_is_a_violation(manip) -> None:
    manip.reset(11)
    other = next(c for c in ("red", "green", "blue") if c != manip.target)
    for _ in range(80):
        to_block = manip.block_xy(other) - manip.tip()
        manip.step(np.clip(3 * to_block, -0.3, 0.3))
    assert manip.metrics()["violations"].get("collision", 0) >= 1


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_and_actions_give_identical_episodes(name: str) -> None:
    a, b = make_task(name), make_task(name)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (20, 2)) * a.action_high
    oa, ob = a.reset(42), b.reset(42)
    assert oa.instruction == ob.instruction and np.array_equal(oa.image, ob.image)
    for act in actions:
        ra, rb = a.step(act), b.step(act)
        assert np.array_equal(ra.observation.image, rb.observation.image)
    a.close()
    b.close()


@pytest.mark.parametrize("name", ["nav", "manip", "manip:smooth"])
def test_expert_solves_fixed_seeds_safely(name: str) -> None:
    task = make_task(*name.split(":")[:1], **_expert(name))
    results = []
    for seed in range(12):
        task.reset(seed)
        while not task.step(task.expert_action()).done:
            pass
        results.append(task.metrics())
    task.close()
    assert sum(r["success"] for r in results) >= 12
    assert sum(r["unsafe"] for r in results) <= 1


@pytest.mark.parametrize("name", TASKS)
def test_observations_are_real_images(name: str) -> None:
    task = make_task(name)
    obs = task.reset(0)
    assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8
    assert obs.image.std() > 5
    task.close()


@pytest.mark.parametrize("name", TASKS)
def test_instruction_names_the_goal_and_splits_are_labelled(name: str) -> None:
    task = make_task(name)
    for seed in (0, 1, 2, HELD_OUT_SEED_START + 1):
        for phrasing in ("train", "heldout"):
            obs = task.reset(seed, phrasing=phrasing)
            named = [c for c in COLOURS if c in obs.instruction.split()]
            assert named == [task.target], obs.instruction
            assert ("heldout_scene" in task.split) == (seed >= HELD_OUT_SEED_START)
            assert ("heldout_phrasing" in task.split) == (phrasing == "heldout")
    task.close()


def test_nav_spl_is_one_for_a_straight_run_and_zero_on_failure(nav) -> None:
    nav.reset(7)
    while not nav.step(nav.expert_action()).done:
        pass
    m = nav.metrics()
    assert m["success"] and 0.5 < m["spl"] <= 1.0
    nav.reset(7)
    for _ in range(nav.max_steps):
        if nav.step(np.array([0.0, 0.5])).done:
            break
    assert nav.metrics()["spl"] == 0.0 and not math.isnan(nav.metrics()["path_length"])


def test_contacts_are_checked_at_every_physics_substep(nav) -> None:
    """The impact peaks early in the control period and has decayed by its end: the event
    carries the peak, so a check only at control rate would have seen a fraction of it."""
    nav.reset(3)
    nav.data.qpos[:3] = (WALL_GAP_X, 0.0, 0.0)
    nav.data.qvel[:] = 0
    nav.data.qvel[0] = 2.0  # coasting into the east wall
    mujoco.mj_forward(nav.model, nav.data)
    (event,) = nav.step(np.zeros(2)).events  # command a stop
    end_force = max(f for a, b, f in nav.contacts() if "base" in (a, b))
    assert event["category"] == "collision" and event["key"] == "base|world"
    assert event["value"] > 5 * end_force


def test_a_non_finite_action_stops_the_robot(nav) -> None:
    nav.reset(3)
    result = nav.step(np.array([math.nan, math.inf]))
    assert np.all(np.isfinite(nav.data.qpos)) and not result.done
    assert abs(nav.data.qvel[2]) < 1e-6


@pytest.mark.parametrize("name", TASKS)
def test_a_given_instruction_sets_the_goal_and_is_labelled_free_text(name: str) -> None:
    with make_task(name) as task:
        task.reset(0)
        other = next(c for c in task.colours if c != task.target)
        obs = task.reset(0, instruction=f"please, the {other} one")
        assert task.target == other and obs.instruction == f"please, the {other} one"
        assert task.split == "train+free_text"


@pytest.mark.parametrize("name", TASKS)
def test_episode_record_is_json_and_complete(name: str) -> None:
    with make_task(name) as task:
        task.reset(1)
        for _ in range(3):
            result = task.step(task.expert_action())
        record = json.loads(json.dumps(task.metrics()))
        assert record["steps"] == 3 and record["path_length"] > 0
        assert record["unsafe"] is False and record["violations"] == {}
        assert (record["spl"] is None) == (name == "manip")
        assert result.info["success"] is False
        assert task.action_low.shape == task.action_high.shape == (len(task.action_names),)
        assert result.observation.sim_time == pytest.approx(0.3)


def test_images_follow_the_requested_size() -> None:
    with make_task("manip", image_size=96) as task:
        image = task.reset(0).image
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and image.std() > 5


def test_supersampled_camera_averages_each_pixel_over_a_finer_render() -> None:
    """The same scene rendered 4x larger and averaged in 4x4 cells: edges take intermediate
    colours (a block's position shows to a fraction of a pixel), flat areas stay as they were."""
    with make_task("manip", supersample=4) as fine, make_task("manip") as plain:
        image, coarse = fine.reset(3).image, plain.reset(3).image
        assert fine.render_size == 256 and image.shape == coarse.shape == (64, 64, 3)
        fine.renderer.update_scene(fine.data, camera=fine.camera)
        full = fine.renderer.render().astype(np.float64)
        cells = full.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
        assert np.abs(image - cells).max() <= 0.5 + 1e-9
        # the camera resizes through frames.fit_frame: bit-identical to OpenCV's area resize,
        # the call it replaced
        exact = cv2.resize(full.astype(np.uint8), (64, 64), interpolation=cv2.INTER_AREA)
        assert np.array_equal(image, exact)
        differs = np.abs(image.astype(int) - coarse.astype(int)).max(axis=2) > 8
        assert 0 < differs.mean() < 0.2  # only pixels that an edge crosses
    with pytest.raises(ValueError, match="supersample"):
        make_task("nav", supersample=0)


@pytest.mark.parametrize("name", TASKS)
def test_expert_recovers_from_noisy_actions(name: str) -> None:
    """Data collection perturbs the expert's actions; it must still finish from where it is."""
    from vla_pruned_ros.sim.check import run_expert

    summary = run_expert(name, episodes=6, first_seed=100, noise=0.3)["summary"]
    assert summary["success_rate"] == 1.0


def test_check_entry_point_prints_a_summary(tmp_path, capsys) -> None:
    from vla_pruned_ros.sim.check import main

    assert main(["--task", "nav", "--episodes", "2", "--json", str(tmp_path / "r.json")]) == 0
    assert "success 1.000" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["episodes"] == 2
    # --expert reaches the task: an unknown one is refused by name
    with pytest.raises(ValueError, match="unknown manipulation expert 'clever'"):
        main(["--task", "manip", "--episodes", "1", "--expert", "clever"])


def test_expert_actions_do_not_depend_on_earlier_episodes() -> None:
    """The manipulation expert caches its route graphs; a warm cache must give the same actions
    (worker processes see different episode histories)."""
    from vla_pruned_ros.sim import manip_routing

    def actions(task) -> np.ndarray:
        task.reset(8)
        out = []
        while True:
            out.append(task.expert_action())
            if task.step(out[-1]).done:
                return np.array(out)

    with make_task("manip") as task:
        manip_routing.clear_cache()
        cold = actions(task)
        task.reset(9)
        task.step(task.expert_action())
        assert np.array_equal(actions(task), cold)


def _label_jumps(expert: str, seeds: range) -> np.ndarray:
    """Per visited state of lightly noisy expert episodes, manip_experts.label_jump (1 px, 8
    directions, largest component)."""
    from vla_pruned_ros.sim.manip_experts import label_jump

    task = make_task("manip", expert=expert)
    rng = np.random.default_rng(0)
    jumps = []
    for seed in seeds:
        task.reset(seed)
        while True:
            jumps.append(label_jump(task))
            if task.step(task.expert_action() + rng.normal(0, 0.09, 2)).done:
                break
    task.close()
    return np.asarray(jumps)


def test_the_smooth_expert_labels_change_less_between_neighbouring_pixels() -> None:
    """What the smooth expert is for: from a 64x64 image, states one pixel apart look alike, so
    their labels should be alike; the routing expert's switch makes them jump."""
    routing, smooth = _label_jumps("routing", range(4)), _label_jumps("smooth", range(4))
    assert np.mean(smooth > 0.9) < 0.6 * np.mean(routing > 0.9), (
        np.mean(smooth > 0.9), np.mean(routing > 0.9))  # fmt: skip


def test_push_weight_says_when_the_expert_pushes_and_only_the_smooth_one_blends() -> None:
    """Behind the block on the push line the label is all push (1); beside the block it is all
    walking around (0); 2 cm off the line the routing expert has switched and the smooth one is
    half way. The failure analysis (research/manip_failures.py) reads this."""
    weights = {}
    for expert in ("routing", "smooth"):
        with make_task("manip", expert=expert) as task:
            task.reset(3)
            block, behind, d = task.push_line()[:3]
            side = np.array([d[1], -d[0]])
            for name, tip in {
                "behind": behind,
                "beside": block + side * 0.09,
                "off_2cm": behind + side * 0.02,
            }.items():
                task.place_tip(tip)
                weights[expert, name] = task.push_weight()
                if weights[expert, name] >= 1.0:  # all push: the label is the push itself
                    assert np.dot(task.expert_action(), d) > 0.05
    assert weights["routing", "behind"] == weights["smooth", "behind"] == 1.0
    assert weights["routing", "beside"] == weights["smooth", "beside"] == 0.0
    assert weights["routing", "off_2cm"] == 0.0
    assert 0.3 < weights["smooth", "off_2cm"] < 0.7


def test_experts_are_chosen_by_name_from_one_registry(tmp_path, capsys) -> None:
    """The names `expert=` accepts, vla-train's --manip-expert choices and the expert a task
    runs all come from manip_experts.EXPERTS; the removed "wide" expert is refused."""
    from vla_pruned_ros.cli.train import main
    from vla_pruned_ros.sim import task_class
    from vla_pruned_ros.sim.manip_experts import EXPERTS, SmoothExpert

    assert task_class("manip").experts == tuple(EXPERTS) == ("routing", "smooth")
    with make_task("manip", expert="smooth") as task:
        assert isinstance(task._expert, SmoothExpert)
    with pytest.raises(SystemExit):
        main(["--workdir", str(tmp_path), "--manip-expert", "wide"])
    assert "invalid choice: 'wide' (choose from" in capsys.readouterr().err


def test_an_unknown_expert_is_named() -> None:
    from vla_pruned_ros.training.collect import CollectConfig, collect

    with pytest.raises(ValueError, match="unknown manipulation expert 'clever'"):
        make_task("manip", expert="clever")
    with pytest.raises(ValueError, match="the nav task has no expert 'smooth'"):
        collect(CollectConfig("nav", 1, expert="smooth"))


def test_scene_state_places_the_scene_relative_to_the_pusher(manip, nav) -> None:
    """The auxiliary training targets: what is where from the pusher, and whether the pusher
    is behind the named block on the push line or beside it. Navigation defines none."""
    from vla_pruned_ros.sim.manip import HALF_BLOCK, STATE_NAMES, STATE_SCALE, TIP_R

    manip.reset(5)
    state = manip.scene_state()
    assert state.shape == (len(STATE_NAMES),) and state.dtype == np.float32
    named = manip.block_xy(manip.target)
    column = {name: i for i, name in enumerate(STATE_NAMES)}
    dx, dy = state[column["named_dx"]], state[column["named_dy"]]
    assert np.allclose([dx, dy], (named - manip.tip()) / STATE_SCALE, atol=1e-6)
    push = (manip.target_pos - named) / np.linalg.norm(manip.target_pos - named)
    assert np.allclose(state[[column["push_dir_x"], column["push_dir_y"]]], push, atol=1e-6)

    def place_tip(offset: np.ndarray) -> np.ndarray:
        manip.data.qpos[manip._tip_qpos] = named + offset
        mujoco.mj_forward(manip.model, manip.data)
        s = manip.scene_state()
        return s[[column["tip_along"], column["tip_lateral"]]] * STATE_SCALE

    gap = HALF_BLOCK + TIP_R + 0.01
    along, lateral = place_tip(-gap * push)  # right behind the block
    assert along == pytest.approx(gap, abs=1e-4) and abs(lateral) < 1e-4
    side = np.array([-push[1], push[0]])
    along, lateral = place_tip(gap * side)  # at its side
    assert abs(along) < 1e-4 and abs(lateral) == pytest.approx(gap, abs=1e-4)
    nav.reset(5)
    assert nav.scene_state() is None
