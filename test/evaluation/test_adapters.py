"""The OpenVLA-style adapter through a small in-test model with the same `predict_action`
contract (it is not OpenVLA), and clear errors for adapters that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vla_pruned_ros.models.adapters import OpenVLAStyleAdapter, load_user_adapter


class PredictActionModel(nn.Module):
    """Tiny stand-in with OpenVLA's contract: normalised actions in [-1, 1] from image + prompt,
    un-normalised with per-dataset statistics chosen by `unnorm_key`."""

    STATS = {"bridge": (np.array([-0.1, -0.2, 0.0]), np.array([0.1, 0.2, 0.3])),
             "libero": (np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0]))}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 + 1, 3)
        self.prompts: list[str] = []

    def predict_action(self, pixel_values, prompt_length, unnorm_key, do_sample=False):
        assert do_sample is False
        x = torch.cat([pixel_values.mean(dim=(1, 2)), prompt_length.float()], dim=-1)
        norm = torch.tanh(self.head(x)).detach().numpy()[0]
        low, high = self.STATS[unnorm_key]
        return 0.5 * (norm + 1) * (high - low) + low


def processor(prompt: str, image) -> dict:
    assert prompt.startswith("In: What action should the robot take to ")
    pixels = torch.from_numpy(np.asarray(image, np.float32) / 255.0).unsqueeze(0)
    return {"pixel_values": pixels, "prompt_length": torch.tensor([[len(prompt) / 100.0]])}


def _adapter(key: str) -> OpenVLAStyleAdapter:
    return OpenVLAStyleAdapter(
        PredictActionModel(),
        processor,
        key,
        ["x", "y", "z"],
        [-1, -1, -1],
        [1, 1, 1],
        model_id="tiny-predict-action",
    )


def test_openvla_style_adapter_prepares_inputs_and_unnormalises() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    bridge = _adapter("bridge").predict(frame, "Pick up the red block")
    libero = _adapter("libero").predict(frame, "Pick up the red block")
    assert bridge.dtype == np.float32 and bridge.shape == (3,)
    low, high = PredictActionModel.STATS["bridge"]
    assert np.all(bridge >= low - 1e-6) and np.all(bridge <= high + 1e-6)
    np.testing.assert_allclose(libero, 1.0)  # degenerate stats: low == high == 1
    assert _adapter("bridge").info.action_names == ("x", "y", "z")
    with pytest.raises(TypeError, match="no predict_action"):
        OpenVLAStyleAdapter(nn.Linear(2, 2), processor, "bridge", ["x"], [-1], [1])
    wrong = OpenVLAStyleAdapter(PredictActionModel(), processor, "bridge", ["x", "y"],
                                [-1, -1], [1, 1])  # fmt: skip
    with pytest.raises(ValueError, match="returned 3 values for 2 action names"):
        wrong.predict(frame, "go")


def test_user_adapter_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="is not 'module:Class'"):
        load_user_adapter("no_colon", "x", "nav")
    with pytest.raises(ValueError, match="cannot import adapter"):
        load_user_adapter("no_such_module:Thing", "x", "nav")
    with pytest.raises(ValueError, match="does not implement PolicyAdapter"):
        load_user_adapter("collections:OrderedDict", "x", "nav")


# -- adapters named in one word (issue 19) --------------------------------------------------
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoint_fixtures import (  # noqa: E402
    OPENVLA_FIXTURE_ACTIONS,
    openvla_contract_dense_action,
    write_openvla_contract_fixture,
)

from vla_pruned_ros.models.action_map import check_action_space  # noqa: E402
from vla_pruned_ros.models.adapters import adapter_options  # noqa: E402
from vla_pruned_ros.models.registry import load_policy  # noqa: E402

FRAME = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> Path:
    return write_openvla_contract_fixture(tmp_path_factory.mktemp("ovla") / "two",
                                          norm_keys=("bridge_orig", "fractal"))  # fmt: skip


def test_openvla_preset_matches_the_dense_predict_action_per_unnorm_key(two_datasets) -> None:
    for key in ("bridge_orig", "fractal"):
        policy = load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key=key,
                             trust_remote_code=True)  # fmt: skip
        assert policy.info.action_names == OPENVLA_FIXTURE_ACTIONS
        got = policy.predict(FRAME, "Pick up the red block")
        want = openvla_contract_dense_action(two_datasets, FRAME, "pick up the red block", key)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        # the cached prompt path gives what the processor itself gives
        uncached = load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key=key,
                               trust_remote_code=True, cache_prompt=False)  # fmt: skip
        np.testing.assert_array_equal(uncached.predict(FRAME, "Pick up the red block"), got)


def test_unnorm_key_must_be_chosen_among_several_and_remote_code_opted_in(two_datasets) -> None:
    with pytest.raises(ValueError, match=r"set unnorm_key to one of \['bridge_orig', 'fractal'\]"):
        load_policy(str(two_datasets), "nav", adapter="openvla", trust_remote_code=True)
    with pytest.raises(ValueError, match="choose one of"):
        load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key="libero",
                    trust_remote_code=True)  # fmt: skip
    with pytest.raises(ValueError, match="trust_remote_code:=true"):
        load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key="fractal")


def test_the_embedded_loader_names_the_adapter_to_set(two_datasets) -> None:
    with pytest.raises(ValueError, match="not the embedded VLA: set adapter:=openvla"):
        load_policy(str(two_datasets), "nav")
    with pytest.raises(ValueError, match="neither a preset"):
        load_policy(str(two_datasets), "nav", adapter="openvla7b")


def test_action_map_connects_ee_deltas_to_a_twist_and_a_mismatch_names_both(two_datasets):
    policy = load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key="fractal",
                         trust_remote_code=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"acts in ee_delta \['x', 'y'.*expects base_velocity "
                                         r"\['linear_x', 'angular_z'\].*action_map"):  # fmt: skip
        check_action_space(policy.info, ["linear_x", "angular_z"], "base_velocity", "task nav")
    amap = {"names": ["linear_x", "angular_z"], "order": ["x", 5], "scale": [2.0, -1.0]}
    mapped = load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key="fractal",
                         trust_remote_code=True, action_map=amap)  # fmt: skip
    check_action_space(mapped.info, ["linear_x", "angular_z"], "mapped", "task nav")
    raw = policy.predict(FRAME, "go")
    np.testing.assert_allclose(mapped.predict(FRAME, "go"), [2.0 * raw[0], -raw[5]], atol=1e-7)
    assert mapped.info.action_low[1] == pytest.approx(-policy.info.action_high[5])
    with pytest.raises(ValueError, match="'wrist' is not one of the model's actions"):
        bad = {"names": ["a"], "order": ["wrist"]}
        load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key="fractal",
                    trust_remote_code=True, action_map=bad)  # fmt: skip


def test_adapter_options_parse_yaml_and_keep_the_opt_in_separate() -> None:
    opts = adapter_options("{action_map: {names: [a], order: [x]}, prompt: 'Q: {instruction}'}",
                           "bridge_orig", True)  # fmt: skip
    assert opts == {"action_map": {"names": ["a"], "order": ["x"]}, "prompt": "Q: {instruction}",
                    "unnorm_key": "bridge_orig", "trust_remote_code": True}  # fmt: skip
    assert adapter_options("") == {"trust_remote_code": False}
    with pytest.raises(ValueError, match="its own parameter"):
        adapter_options("trust_remote_code: true")
    with pytest.raises(ValueError, match="must be a mapping"):
        adapter_options("[1, 2]")


def test_text_rules_parse_navila_answers_and_say_why_not() -> None:
    from vla_pruned_ros.models.text_action import NAVILA_RULES, TextActionParser

    parser = TextActionParser(NAVILA_RULES, 2)
    np.testing.assert_allclose(parser.parse("The next action is turn left 30 degrees."),
                               [0.0, 30 * 0.0174533], rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(parser.parse("move forward 75 cm"), [0.75, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(parser.parse("Stop."), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"answered 'fly up'.*matches none of the text rules"):
        parser.parse("fly up")
    with pytest.raises(ValueError, match="needs a group"):
        TextActionParser([{"pattern": "left", "per_unit": [0.0, 1.0]}], 2)


def _lerobot_0_4_4_folder(folder: Path) -> Path:
    """A policy folder laid out as LeRobot 0.4.4 saves one (contract: file names and the
    config's features, as in lerobot/utils/constants.py and configs/policies.py of 0.4.4)."""
    import json

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "type": "smolvla",
        "input_features": {
            "observation.images.camera1": {"type": "VISUAL", "shape": [3, 24, 32]},
            "observation.images.wrist": {"type": "VISUAL", "shape": [3, 24, 32]},
            "observation.state": {"type": "STATE", "shape": [6]},
        },
        "output_features": {"action": {"type": "ACTION", "shape": [6]}},
    }))  # fmt: skip
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        (folder / name).write_text("{}")
    return folder


def test_lerobot_contract_observation_keys_and_install_hint(tmp_path: Path) -> None:
    from vla_pruned_ros.models.lerobot_adapter import lerobot_observation, read_policy_config

    folder = _lerobot_0_4_4_folder(tmp_path / "smolvla")
    config = read_policy_config(folder)
    obs = lerobot_observation(config, FRAME, "pick up the cube", camera_key="")
    assert set(obs) == {"observation.images.camera1", "observation.images.wrist",
                        "observation.state", "task"}  # fmt: skip
    assert obs["task"] == ["pick up the cube"]
    assert tuple(obs["observation.images.camera1"].shape) == (1, 3, 30, 40)
    assert float(obs["observation.images.camera1"].max()) <= 1.0
    assert tuple(obs["observation.state"].shape) == (1, 6)
    only = lerobot_observation(config, FRAME, "x", camera_key="observation.images.wrist")
    assert "observation.images.camera1" not in only
    with pytest.raises(ValueError, match="camera_key 'front' is not one of"):
        lerobot_observation(config, FRAME, "x", camera_key="front")
    try:
        import lerobot  # noqa: F401
    except ImportError:  # this package's own environment: the adapter says what to install
        with pytest.raises(ValueError, match=r"pip install 'lerobot\[smolvla\]==0.4.4'"):
            load_policy(str(folder), "manip", adapter="lerobot")
    with pytest.raises(FileNotFoundError, match="not a LeRobot policy folder"):
        load_policy(str(tmp_path), "manip", adapter="lerobot")


def test_vla_prune_on_a_lerobot_folder_says_to_deploy_it_with_the_lerobot_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vla_pruned_ros.cli.prune import main

    folder = _lerobot_0_4_4_folder(tmp_path / "smolvla")
    assert main(["--model", str(folder), "--output", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err
    assert "is a LeRobot policy folder" in err and "adapter:=lerobot" in err
    assert "vla-train" not in err  # not the embedded model's "train them" advice
    assert not (tmp_path / "art").exists()


def test_fast_pixels_equal_the_image_processor_and_decline_what_they_cannot_do(
    two_datasets,
) -> None:
    """The fixture's SigLIP-style processor through models/pixel_inputs.py: bit-identical
    pixel_values on a 640x480 frame (the check is |diff| <= 1e-5; it measures 0); area resize
    equals fit_frame then the processor; a centre-cropping processor is left to itself."""
    from transformers import AutoProcessor, CLIPImageProcessorPil

    from vla_pruned_ros.frames import fit_frame
    from vla_pruned_ros.models.pixel_inputs import TOLERANCE, fast_pixels

    image = AutoProcessor.from_pretrained(two_datasets, trust_remote_code=True,
                                          local_files_only=True).image_processor  # fmt: skip
    frame = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    exact, how = fast_pixels(image)
    assert exact is not None, how
    want = image(frame, return_tensors="np")["pixel_values"]
    assert np.abs(exact(frame).numpy() - want).max() <= TOLERANCE
    np.testing.assert_array_equal(exact(frame).numpy(), want)
    area, how = fast_pixels(image, "area")
    fitted = fit_frame(frame, image.size["height"])
    np.testing.assert_array_equal(area(frame).numpy(),
                                  image(fitted, return_tensors="np")["pixel_values"])  # fmt: skip
    assert not np.array_equal(area(frame).numpy(), want), "area resize is not the processor's"
    crop = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    none, why = fast_pixels(crop)
    assert none is None and "do_center_crop" in why, why


def test_presets_refuse_unknown_options_and_name_theirs(two_datasets) -> None:
    with pytest.raises(ValueError, match="takes no option 'unorm_key'; its options: .*unnorm_key"):
        load_policy(str(two_datasets), "nav", adapter="openvla", unorm_key="fractal",
                    trust_remote_code=True)  # fmt: skip
    with pytest.raises(ValueError, match="embedded adapter takes no option 'unnorm_key'"):
        load_policy("embedded", "nav", unnorm_key="fractal")
    with pytest.raises(ValueError, match="resize 'nearest' is not one of"):
        load_policy(str(two_datasets), "nav", adapter="openvla", unnorm_key="fractal",
                    trust_remote_code=True, resize="nearest")  # fmt: skip


def _suggested_map(info, want: list[str]) -> dict:
    """The action_map a mismatch error suggests, read back from the message as a user copies it."""
    import yaml

    with pytest.raises(ValueError, match="action_map, e.g. action_map: ") as err:
        check_action_space(info, want, "base_velocity", "task nav")
    return yaml.safe_load(str(err.value).split("action_map, e.g. action_map: ", 1)[1])


@pytest.mark.parametrize("names", [("vx",), ("x", "y", "z", "roll", "pitch", "yaw", "gripper"),
                                   ("angular_z", "z", "linear_x")])  # fmt: skip
def test_a_mismatch_suggests_an_action_map_that_parses_and_then_fits(names) -> None:
    """Fewer model actions than wanted names (a 1-D model for a twist) gave `order: ['vx']` for
    two names, which parse_action_map refuses; the suggestion must be a valid map whose result
    fits, names shared by both spaces mapping onto themselves."""
    from vla_pruned_ros.models.action_map import MappedPolicy, parse_action_map
    from vla_pruned_ros.models.base import PolicyInfo

    n = len(names)
    info = PolicyInfo("m", "dense", -1, "own", names, (-1.0,) * n, (1.0,) * n, 0)
    want = ["linear_x", "angular_z"]
    suggestion = _suggested_map(info, want)
    amap = parse_action_map(suggestion, info)
    assert amap.names == tuple(want) and len(amap.index) == len(amap.scale) == 2
    for target, source_index in zip(want, amap.index, strict=True):
        if target in names:
            assert names[source_index] == target

    class Ramp:  # the model's action i is i + 1
        def __init__(self) -> None:
            self.info = info

        def predict(self, image, instruction):
            return np.arange(1, n + 1, dtype=np.float32)

    mapped = MappedPolicy(Ramp(), amap)
    check_action_space(mapped.info, want, "base_velocity", "task nav")  # now it fits
    out = mapped.predict(FRAME, "go")
    assert out.shape == (2,)
    if n == 1:  # one action feeds linear_x; angular_z stays zero
        assert out.tolist() == [1.0, 0.0]
    if names[0] == "angular_z":
        assert out.tolist() == [3.0, 1.0]


def test_vla_eval_sim_gives_a_module_class_its_adapter_options(tmp_path: Path) -> None:
    """`vla-eval sim --adapter module:Class --adapter-options YAML`: the options are the class's
    constructor arguments (test/ros/user_adapter.ScaledPolicy requires scale and offset): with
    them an episode runs, without them the class cannot be built and the tool says why."""
    import json
    import os
    import subprocess

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "ros"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [sys.executable, "-m", "vla_pruned_ros.cli.eval", "sim", "--task", "nav", "--model",
           str(tmp_path), "--adapter", "user_adapter:ScaledPolicy", "--episodes", "1",
           "--heldout-phrasing", "0", "--json", str(tmp_path / "sim.json")]  # fmt: skip
    given = subprocess.run([*cmd, "--adapter-options", "{scale: 0.5, offset: [0.1, 0.3]}"],
                           capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert given.returncode == 0, given.stderr[-2000:]
    assert json.loads((tmp_path / "sim.json").read_text())["summary"]["episodes"] == 1
    dropped = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert dropped.returncode != 0
    assert "'scale' and 'offset'" in dropped.stderr, dropped.stderr[-2000:]
