"""`vla-eval sweep` on a user's own checkpoint, with configuration only: the OpenVLA-contract
fixture of test/checkpoint_fixtures.py (not OpenVLA) as `model: DIR`, its adapter, the map from
its 7-D end-effector actions to the navigation twist and the remote-code opt-in in the sweep
YAML. The table's variants are built by the checkpoint compression path (pruned once, every
rank and factor dtype derived from that pruning) and evaluated through the adapter the node
uses: its dense row is `vla-eval sim` on the same folder and seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoint_fixtures import write_openvla_contract_fixture  # noqa: E402

BIN = Path(sys.executable).parent
ACTION_MAP = {"names": ["linear_x", "angular_z"], "order": ["x", "yaw"], "scale": [5.0, 5.0]}
COMPARED = ("seed", "success", "unsafe", "collisions", "violations", "steps", "spl",
            "distance_to_goal")  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_openvla_contract_fixture(tmp_path_factory.mktemp("user") / "my_vla")


def _config(folder: Path, model: Path, **params) -> Path:
    p = {"model": str(model), "adapter": "openvla", "trust_remote_code": True,
         "action_map": ACTION_MAP, "tasks": ["nav"], "episodes": 2, "heldout_phrasing": 0,
         "methods": ["magnitude"], "patterns": ["2:4"], "ranks": [], "factor_dtype": "float16",
         "artifacts_dir": str(folder / "art"), "cells_dir": str(folder / "cells"),
         "json": str(folder / "out" / "t.json"), "markdown": str(folder / "out" / "t.md"),
         "plots_dir": str(folder / "out" / "img"), **params}  # fmt: skip
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"vla_eval_sweep": {"ros__parameters": p}}))
    return path


def test_a_checkpoint_table_whose_dense_row_is_vla_eval_sim(checkpoint: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    config = _config(tmp_path, checkpoint)
    sim_json = tmp_path / "sim.json"
    options = json.dumps({"action_map": ACTION_MAP})
    runs = [  # side by side: two processes, the machine's two cores
        subprocess.Popen([str(BIN / "vla-eval"), "sweep", "--config", str(config)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([str(BIN / "vla-eval"), "sim", "--task", "nav", "--model",
                          str(checkpoint), "--adapter", "openvla", "--trust-remote-code",
                          "--adapter-options", options, "--episodes", "2",
                          "--heldout-phrasing", "0", "--json", str(sim_json)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in runs]
    for p, (_, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    result = json.loads((tmp_path / "out" / "t.json").read_text())
    assert [v["name"] for v in result["variants"]] == ["dense", "magnitude_2:4"]
    dense, pruned = result["variants"]
    assert dense["artifact"] == str(checkpoint.resolve())
    assert dense["loader"] == {"adapter": "openvla", "action_map": ACTION_MAP,
                               "trust_remote_code": True}  # fmt: skip
    # the pruned artifact: the checkpoint path's, in its own folder beside the embedded caches
    art = Path(pruned["artifact"])
    assert art.parent == tmp_path / "art" / "checkpoint-my_vla"
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["extra"]["deploy"]["adapter"]["name"] == "openvla"
    assert "modeling_tiny_openvla.py" in manifest["files"]
    assert pruned["memory"]["total_bytes"] < dense["memory"]["total_bytes"]
    cells = sorted(p.name for p in (tmp_path / "cells" / "checkpoint-my_vla").iterdir())
    assert cells == ["dense__nav.json", "magnitude_2-4__nav.json"]
    # dense row == vla-eval sim on the same folder and seeds, episode by episode
    sim = json.loads(sim_json.read_text())
    want = [{k: e.get(k) for k in COMPARED if k in e} for e in sim["episodes"]]
    assert dense["tasks"]["nav"]["episodes"] == want
    for key in ("success", "unsafe"):
        assert dense["tasks"]["nav"]["summary"][key] == sim["summary"][key]
    md = (tmp_path / "out" / "t.md").read_text()
    assert "magnitude 2:4 (pruned)" in md
    assert "Memory: the whole model" in md and "MiniLM" not in md  # not the embedded VLA's table


def test_a_model_whose_actions_are_not_the_tasks_is_refused_naming_both(
    checkpoint: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, checkpoint, action_map={})
    done = subprocess.run([str(BIN / "vla-eval"), "sweep", "--config", str(config)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    err = done.stderr
    assert "acts in ee_delta ['x', 'y', 'z', 'roll', 'pitch', 'yaw', 'gripper']" in err, err
    assert "task 'nav' expects base_velocity ['linear_x', 'angular_z']" in err, err
    assert "action_map" in err
    assert not (tmp_path / "art").exists(), "nothing is built for a table that cannot run"


def test_pruned_once_every_rank_and_dtype_derived_from_it(
    checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two factor dtypes of one rank: one pruning (one log line, one streamed rank-0 pass),
    identical pruned tensors in every artifact, each corrected manifest naming the pruned
    artifact it came from; the fp16 one equal to `vla-prune --model DIR --rank 8`'s factors;
    a second build reuses everything."""
    from safetensors.torch import load_file

    from vla_pruned_ros.evaluation.sweep import SweepConfig, build_variants
    from vla_pruned_ros.models.hf_checkpoint import compress_checkpoint

    cfg = SweepConfig.from_file(_config(tmp_path, checkpoint, ranks=[8],
                                        factor_dtype=["float16", "int8"]))  # fmt: skip
    variants = build_variants(cfg, progress=False)
    names = [v.name for v in variants]
    assert names == ["dense", "magnitude_2:4", "magnitude_2:4_r8", "magnitude_2:4_r8_int8"]
    err = capfd.readouterr().err
    assert err.count("[vla-eval sweep] prune magnitude 2:4") == 1, err
    arts = {v.name: Path(v.artifact) for v in variants[1:]}

    def tensors(name: str, kind: str) -> dict:
        out = {}
        for f in sorted(arts[name].glob(f"{kind}*.safetensors")):
            out.update(load_file(str(f)))
        return out

    base = tensors("magnitude_2:4", "pruned")
    assert base and all(k.endswith((".values", ".indices", ".bias")) for k in base)
    pruned_sha = __import__("hashlib").sha256(
        (arts["magnitude_2:4"] / "manifest.json").read_bytes()).hexdigest()  # fmt: skip
    for name in ("magnitude_2:4_r8", "magnitude_2:4_r8_int8"):
        got = tensors(name, "pruned")
        assert got.keys() == base.keys()
        assert all(got[k].equal(base[k]) for k in base), f"{name} was pruned again"
        manifest = json.loads((arts[name] / "manifest.json").read_text())
        assert manifest["extra"]["pruned_from"]["manifest_sha256"] == pruned_sha
        assert manifest["rank_policy"] == "rank:8"
        assert manifest["extra"]["deploy"] is not None
    fp16, int8 = tensors("magnitude_2:4_r8", "factors"), tensors("magnitude_2:4_r8_int8", "factors")
    a = next(k for k in fp16 if k.endswith(".a"))
    assert fp16[a].dtype.is_floating_point and not int8[a].dtype.is_floating_point
    # the derived fp16 artifact's factors are what vla-prune's streaming path writes at r=8
    direct = compress_checkpoint(checkpoint, tmp_path / "direct", "2:4", 8, svd="exact",
                                 trust_remote_code=True, progress=False)  # fmt: skip
    streamed = {}
    for f in sorted(direct.glob("factors*.safetensors")):
        streamed.update(load_file(str(f)))
    assert streamed.keys() == fp16.keys()
    assert all(streamed[k].equal(fp16[k]) for k in fp16)
    # cached: no pruning, no rewrite
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "art").glob("*/*/manifest.json")}
    assert len(stamps) == 3
    assert [v.name for v in build_variants(cfg, progress=False)] == names
    assert "prune magnitude" not in capfd.readouterr().err
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_wanda_prunes_block_by_block_on_expert_frames_through_the_processor(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Wanda on a checkpoint: calibrated on the tasks' expert frames (training scenes) through
    the checkpoint's own processor and the adapter's prompt, pixel values included."""
    from vla_pruned_ros.evaluation.sweep import SweepConfig, build_variants

    cfg = SweepConfig.from_file(_config(tmp_path, checkpoint, methods=["wanda"], calib_scenes=1))
    variants = build_variants(cfg, progress=False)
    assert [v.name for v in variants] == ["dense", "wanda_2:4"]
    manifest = json.loads((Path(variants[1].artifact) / "manifest.json").read_text())
    assert manifest["method"] == "wanda"
    calibration = manifest["extra"]["calibration"]
    assert calibration["samples"] > 4 and "pixel_values" in calibration["inputs"]
