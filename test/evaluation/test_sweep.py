"""`vla-eval sweep` end to end on a tiny budget: artifacts built and reused, cells cached,
table, plot and JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vla_pruned_ros.evaluation.report import markdown_table
from vla_pruned_ros.evaluation.sweep import SweepConfig

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **params) -> Path:
    base = yaml.safe_load((ROOT / "config" / "sweep.yaml").read_text())
    p = base["vla_eval_sweep"]["ros__parameters"]
    p.update({
        "tasks": ["nav"], "episodes": 2, "methods": ["magnitude"], "patterns": ["2:4"],
        "ranks": [4, "energy:0.5"], "heldout_phrasing": 1,
        "artifacts_dir": str(tmp_path / "art"), "cells_dir": str(tmp_path / "cells"),
        "json": str(tmp_path / "out" / "closed_loop.json"),
        "markdown": str(tmp_path / "out" / "results.md"),
        "plots_dir": str(tmp_path / "out" / "img"),
        **params,
    })  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_sweep_writes_the_table_and_resumes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    cmd = [sys.executable, "-m", "vla_pruned_ros.cli.eval", "sweep", "--config", str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "closed_loop.json").read_text())
    names = [v["name"] for v in result["variants"]]
    assert names == ["dense", "magnitude_2:4", "magnitude_2:4_r4", "magnitude_2:4_energy-0.5"]
    assert [r["rank_policy"] for r in result["rows"]] == ["", "rank:0", "rank:4", "energy:0.5"]
    assert all(r["heldout_phrasing_success"] is not None for r in result["rows"])
    assert all(r["dense_bytes"] == result["rows"][0]["model_bytes"] for r in result["rows"])
    seeds = {n: [e["seed"] for e in v["tasks"]["nav"]["episodes"]]
             for n, v in zip(names, result["variants"], strict=True)}  # fmt: skip
    assert len({tuple(s) for s in seeds.values()}) == 1, "variants must share the scenes"
    mem = [v["memory"]["total_bytes"] for v in result["variants"]]
    assert mem[1] < mem[0] and mem[1] < mem[2]  # pruning saves, factors cost
    assert mem[3] > mem[2]  # half the gap energy needs more than rank 4
    md = (tmp_path / "out" / "results.md").read_text()
    assert "magnitude 2:4 + GLUESTICK r=4" in md and "GLUESTICK energy 0.5" in md
    assert "closed_loop.png" in md and "held-out phrasing success" in md
    assert "MiniLM's 11.7 M-parameter word-embedding table" in md  # the embedded VLA's own
    assert (tmp_path / "out" / "img" / "closed_loop.png").stat().st_size > 10_000
    assert markdown_table(result) in md
    # a second run reuses artifacts and cells: nothing is recomputed
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
    # the report re-renders from the JSON alone
    (tmp_path / "out" / "results.md").unlink()
    render = subprocess.run([*cmd, "--render-only"], capture_output=True, text=True, timeout=120)
    assert render.returncode == 0, render.stderr[-2000:]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Does it reproduce the paper?" in md and "- navigation, magnitude 2:4:" in md
    assert f"weights sha256 {result['model_sha256'][:12]}" in md


def test_a_retrained_model_is_not_served_from_the_cache(tmp_path: Path) -> None:
    """Artifacts and cells remember the dense weights they came from: after retraining (other
    weights in the same folder), and after a change of its config (a calibrated action gain),
    the sweep rebuilds and reruns everything."""
    import torch

    from vla_pruned_ros.evaluation.action_gain import write_gain
    from vla_pruned_ros.models.embedded import load_embedded, save_embedded

    model = load_embedded()
    save_embedded(model, tmp_path / "model")
    config = _config(tmp_path, model=str(tmp_path / "model"), ranks=[4])
    cmd = [sys.executable, "-m", "vla_pruned_ros.cli.eval", "sweep", "--config", str(config)]
    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0

    def rerun(change) -> tuple[dict, set[bool], set[bool]]:
        """The sweep after `change`: its result, and whether each cell / artifact was rewritten."""
        cells = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").iterdir()}
        arts = {p: p.stat().st_mtime_ns for p in (tmp_path / "art").glob("*/manifest.json")}
        change()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads((tmp_path / "out" / "closed_loop.json").read_text())
        return (result, {p.stat().st_mtime_ns != t for p, t in cells.items()},
                {p.stat().st_mtime_ns != t for p, t in arts.items()})  # fmt: skip

    first = json.loads((tmp_path / "out" / "closed_loop.json").read_text())

    def retrain() -> None:  # the same folder, other weights
        with torch.no_grad():
            model.heads["nav"][2].bias.add_(0.5)
        save_embedded(model, tmp_path / "model")

    second, cells, arts = rerun(retrain)
    assert second["model_sha256"] != first["model_sha256"]
    assert cells == arts == {True}
    # the same weights with a calibrated action gain act differently: rebuilt again
    third, cells, arts = rerun(lambda: write_gain(tmp_path / "model", "nav", 1.5))
    assert third["model_sha256"] == second["model_sha256"]
    assert third["action_gain"]["nav"] == 1.5
    assert "nav 1.5)" in (tmp_path / "out" / "results.md").read_text()
    assert cells == arts == {True}
    # another task's gain: new artifacts (they carry the config), but these nav cells stand
    _, cells, arts = rerun(lambda: write_gain(tmp_path / "model", "manip", 2.0))
    assert cells == {False} and arts == {True}


def test_unknown_sweep_parameters_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown parameters \['rnaks'\]"):
        SweepConfig.from_file(_config(tmp_path, rnaks=[1]))


def test_corrections_and_factor_dtypes_are_variants(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`corrections` and a list of `factor_dtype`s build one artifact per rank policy for each,
    all from one pruning (issue 21: it was redone per correction and dtype); svd at fp16 keeps
    the main table's names (its cached cells stay valid), the others get a suffix, the manifest
    records the correction, and a second build reuses every artifact."""
    from safetensors.torch import load_file

    from vla_pruned_ros.compression import read_manifest
    from vla_pruned_ros.evaluation.sweep import build_variants

    cfg = SweepConfig.from_file(
        _config(tmp_path, ranks=[2], corrections=["svd", "activation"],
                factor_dtype=["float16", "int8"], calib_scenes=1,
                include=["heads.*"])
    )  # fmt: skip
    variants = build_variants(cfg, progress=False)
    names = [v.name for v in variants]
    assert names == ["dense", "magnitude_2:4", "magnitude_2:4_r2", "magnitude_2:4_r2_int8",
                     "magnitude_2:4_r2_act", "magnitude_2:4_r2_act_int8"]  # fmt: skip
    assert capfd.readouterr().err.count("[vla-eval sweep] prune magnitude 2:4: once") == 1
    by_name = {v.name: v for v in variants}
    pruned = load_file(str(Path(by_name["magnitude_2:4"].artifact) / "pruned.safetensors"))
    for name in names[2:]:
        got = load_file(str(Path(by_name[name].artifact) / "pruned.safetensors"))
        assert got.keys() == pruned.keys() and all(got[k].equal(pruned[k]) for k in pruned)
    assert by_name["magnitude_2:4_r2_act_int8"].correction == "activation"
    assert by_name["magnitude_2:4_r2_int8"].factor_dtype == "int8"
    # stored cost of the correction: the artifact's bytes beyond the plain pruned model's
    # (half at int8, safetensors headers aside)
    extra = {n: by_name[n].memory["artifact_bytes"] - by_name["magnitude_2:4"].memory[
        "artifact_bytes"] for n in names[2:]}  # fmt: skip
    assert extra["magnitude_2:4_r2"] > 1.5 * extra["magnitude_2:4_r2_int8"] > 0
    assert abs(extra["magnitude_2:4_r2_act"] - extra["magnitude_2:4_r2"]) < 300  # same shapes
    recorded = {n: read_manifest(Path(by_name[n].artifact), verify=False)["extra"]["correction"]
                for n in names[2:]}  # fmt: skip
    assert recorded["magnitude_2:4_r2"]["correction"] == "svd"
    assert recorded["magnitude_2:4_r2_act_int8"]["correction"] == "activation"
    assert recorded["magnitude_2:4_r2_act"]["damp"] == cfg.damp
    assert "training scenes 0-0" in recorded["magnitude_2:4_r2_act"]["calibration"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "art").glob("*/manifest.json")}
    assert len(stamps) == 5
    assert [v.name for v in build_variants(cfg, progress=False)] == names
    assert "prune magnitude" not in capfd.readouterr().err
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "art").glob("*/manifest.json")}


def test_the_command_line_cuts_the_grid_and_a_changed_build_is_rerun(tmp_path: Path) -> None:
    """`vla-eval sweep --patterns/--corrections/--factor-dtype/--calib-scenes/--damp/
    --cells-dir/--artifacts-dir` reach the table (issue 22 ran edited copies of the config
    before). A cached artifact is reused only for the same build settings, and a cell only for
    the same artifact and runtime: a new damping rebuilds the activation variant and reruns its
    cell, while the plain pruned model and its cell stand."""
    from vla_pruned_ros.cli.eval import main as eval_main
    from vla_pruned_ros.compression.kernels import kernel_build

    # the command line's --ranks hold for every pattern, the config's pattern_ranks aside
    config = _config(tmp_path, include=["heads.*"], episodes=1, pattern_ranks={"4:8": [4]})
    art, cells = tmp_path / "art2", tmp_path / "cells2"
    argv = ["sweep", "--config", str(config), "--patterns", "4:8", "--ranks", "2",
            "--corrections", "activation", "--factor-dtype", "int8", "--calib-scenes", "1",
            "--heldout-phrasing", "0", "--artifacts-dir", str(art),
            "--cells-dir", str(cells)]  # fmt: skip
    assert eval_main([*argv, "--damp", "0.05"]) == 0
    result = json.loads((tmp_path / "out" / "closed_loop.json").read_text())
    assert [v["name"] for v in result["variants"]] == [
        "dense", "magnitude_4:8", "magnitude_4:8_r2_act_int8"]  # fmt: skip
    assert result["config"]["damp"] == 0.05 and result["config"]["calib_scenes"] == 1
    assert result["config"]["heldout_phrasing"] == 0
    # the machine it ran on, as a reader of the page needs it (episodes differ across CPUs)
    assert result["machine"]["cpu"] and result["machine"]["torch_cpu_capability"]
    page = (tmp_path / "out" / "results.md").read_text()
    assert f"torch {result['machine']['torch_cpu_capability']}" in page
    assert {p.name for p in art.iterdir()} == {"magnitude_4-8", "magnitude_4-8_r2_act_int8"}
    keys = {p.name: json.loads(p.read_text())["key"] for p in cells.iterdir()}
    assert "artifact_sha256" not in keys["dense__nav.json"]
    corrected = keys["magnitude_4-8_r2_act_int8__nav.json"]
    assert corrected["runtime"] == kernel_build() and len(corrected["artifact_sha256"]) == 64

    def files() -> dict[str, int]:
        return {str(p.relative_to(tmp_path)): p.stat().st_mtime_ns
                for p in [*cells.iterdir(), *art.glob("*/manifest.json")]}  # fmt: skip

    stamps = files()
    assert eval_main([*argv, "--damp", "0.2"]) == 0
    changed = {name for name, stamp in files().items() if stamp != stamps[name]}
    assert changed == {"cells2/magnitude_4-8_r2_act_int8__nav.json",
                       "art2/magnitude_4-8_r2_act_int8/manifest.json"}  # fmt: skip
    manifest = json.loads((art / "magnitude_4-8_r2_act_int8" / "manifest.json").read_text())
    assert manifest["extra"]["sweep_build"]["damp"] == 0.2


def test_conv_prunes_the_vision_convolutions_under_their_own_names(tmp_path: Path) -> None:
    """`vla-eval sweep --conv` (issue 22's harder regime: the vision pathway included) prunes
    and corrects the vision stem's convolutions too, under names of their own (`_conv`), so a
    table never serves a conv variant's artifact or cell for the plain one; the result and the
    page say which rows pruned the convolutions; a checkpoint sweep refuses the option."""
    from vla_pruned_ros.cli.eval import main as eval_main
    from vla_pruned_ros.evaluation.report import correction_markdown

    layers = ["heads.*", "blocks.[12].conv"]  # blocks.0.conv reads 45 inputs: not 2:4
    config = _config(tmp_path, include=layers, episodes=1, heldout_phrasing=0)
    argv = ["sweep", "--config", str(config), "--ranks", "2", "--corrections", "activation",
            "--calib-scenes", "1"]  # fmt: skip
    assert eval_main([*argv, "--conv"]) == 0
    result = json.loads((tmp_path / "out" / "closed_loop.json").read_text())
    names = [v["name"] for v in result["variants"]]
    assert names == ["dense", "magnitude_2:4_conv", "magnitude_2:4_conv_r2_act"]
    assert [v["conv"] for v in result["variants"]] == [False, True, True]
    manifest = json.loads((tmp_path / "art" / "magnitude_2-4_conv_r2_act" / "manifest.json"
                           ).read_text())  # fmt: skip
    convs = {n: e for n, e in manifest["layers"].items() if "conv" in e}
    assert sorted(convs) == ["blocks.1.conv", "blocks.2.conv"]
    assert all(e["rank"] == 2 for e in convs.values())
    assert manifest["extra"]["sweep_build"]["conv"] is True
    assert "magnitude 2:4 + convs + GLUESTICK r=2 (activation)" in correction_markdown(result)
    # the plain regime: its own artifacts, no convolution pruned, no `conv` in its build
    assert eval_main(argv) == 0
    result = json.loads((tmp_path / "out" / "closed_loop.json").read_text())
    assert [v["name"] for v in result["variants"]] == ["dense", "magnitude_2:4",
                                                      "magnitude_2:4_r2_act"]  # fmt: skip
    manifest = json.loads((tmp_path / "art" / "magnitude_2-4_r2_act" / "manifest.json"
                           ).read_text())  # fmt: skip
    assert not any("conv" in e for e in manifest["layers"].values())
    assert "conv" not in manifest["extra"]["sweep_build"]  # artifacts cached before it match
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="conv: a checkpoint sweep prunes its Linear layers"):
        SweepConfig.from_file(config, model=str(checkpoint), conv=True)
