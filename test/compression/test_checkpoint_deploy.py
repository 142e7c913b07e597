"""An artifact of a user's checkpoint carries what deployment needs: the OpenVLA-contract fixture
(remote code, `auto_map` naming only AutoModelForVision2Seq, `norm_stats`) goes through
`vla-prune --model DIR --trust-remote-code`, and its artifact holds the config, processor,
tokenizer and code files (checksummed), the adapter and its options, the action statistics, the
source's name and weight sha256 (no absolute path), readable by other users; it loads only with
the caller's own `trust_remote_code=True`."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vla_pruned_ros.compression import ArtifactError, read_manifest
from vla_pruned_ros.compression.artifact import sha256_file
from vla_pruned_ros.models.hf_checkpoint import (
    CheckpointError,
    deployment_folder,
    load_checkpoint_artifact,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/checkpoint_fixtures.py
from checkpoint_fixtures import (  # noqa: E402
    load_openvla_contract_dense,
    openvla_norm_stats,
    write_openvla_contract_fixture,
    write_text_action_fixture,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("openvla")
    folder = write_openvla_contract_fixture(root / "tiny-openvla")
    out = _prune(folder, root / "art", "--rank", "64", "--svd", "exact", "--factor-dtype",
                 "float32")  # fmt: skip
    return folder, out


def _prune(folder: Path, out: Path, *options: str) -> Path:
    """`vla-prune --model folder --trust-remote-code --pattern 2:4 *options -o out`, checked."""
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model", str(folder),
         "--trust-remote-code", "--pattern", "2:4", *options, "-o", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_artifact_carries_processor_code_adapter_and_actions(built) -> None:
    folder, out = built
    manifest = read_manifest(out)  # every file checksummed, none unlisted
    files = set(manifest["files"])
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json", "processor_config.json",
                 "configuration_tiny_openvla.py", "modeling_tiny_openvla.py",
                 "processing_tiny_openvla.py"):  # fmt: skip
        assert name in files, name
    assert "model.safetensors" not in files
    deploy = manifest["extra"]["deploy"]
    assert deploy["adapter"] == {"name": "openvla", "options": {"unnorm_key": "bridge_orig"}}
    assert deploy["actions"]["norm_stats"] == openvla_norm_stats()
    assert deploy["actions"]["bounds"]["bridge_orig"]["high"][-1] == 1.0
    assert "modeling_tiny_openvla.py" in deploy["remote_code"]
    source = manifest["source"]
    assert source["model_id"] == "tiny-openvla"
    assert source["sha256"] == sha256_file(folder / "model.safetensors")
    assert str(folder) not in (out / "manifest.json").read_text()  # no absolute source path
    assert deployment_folder(out) == out
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_it_loads_only_on_the_callers_opt_in_and_matches_the_dense_model(built) -> None:
    folder, out = built
    with pytest.raises(CheckpointError, match="pass trust_remote_code=True"):
        load_checkpoint_artifact(out)
    model = load_checkpoint_artifact(out, trust_remote_code=True)
    dense, processor = load_openvla_contract_dense(folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8))
    inputs = processor("In: What action should the robot take to pick up the cup?\nOut:", image)
    with torch.no_grad():
        got, want = model(**inputs).logits, dense(**inputs).logits
    # full rank: the dense model up to fp16 storage of its weights
    assert (got - want).abs().max() < 2e-2 * want.abs().max()
    assert model.predict_action(**inputs, do_sample=False).shape == (7,)


def test_a_changed_or_added_checkpoint_file_is_refused(built, tmp_path) -> None:
    import shutil

    _, out = built
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    code = copy / "modeling_tiny_openvla.py"
    code.chmod(0o644)
    code.write_text(code.read_text() + "\nimport os  # injected\n")
    with pytest.raises(ArtifactError, match="modeling_tiny_openvla.py is corrupt"):
        read_manifest(copy)
    shutil.rmtree(copy)
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    (copy / "helpers").mkdir()
    (copy / "helpers" / "extra_module.py").write_text("print('hi')\n")
    with pytest.raises(ArtifactError, match=r"helpers/extra_module\.py"):
        load_checkpoint_artifact(copy, trust_remote_code=True)


def test_vla_inspect_shows_the_deployment(built) -> None:
    _, out = built
    shown = subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.inspect_artifact",
                            str(out)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "adapter openvla {'unnorm_key': 'bridge_orig'}" in shown.stdout
    assert "modeling_tiny_openvla.py" in shown.stdout


def test_a_bf16_artifact_runs_as_bf16_from_its_adapter_options_alone(built, tmp_path) -> None:
    """`vla-prune --weight-dtype bfloat16 --adapter-option dtype=bfloat16`: the node's loader
    (`load_policy` with the manifest's preset) computes in bf16 on bf16 values, which is what
    the kernel's AMX tile path takes, and says so; the model agrees with the same artifact
    loaded as fp32 to bf16 rounding; a dtype that is not one is refused by name."""
    from vla_pruned_ros.compression.kernels import kernel
    from vla_pruned_ros.compression.runtime_modes import runtime_summary
    from vla_pruned_ros.compression.sparse_runtime import SparseGluestickLinear
    from vla_pruned_ros.models.registry import load_policy

    folder, _ = built
    out = _prune(folder, tmp_path / "bf16", "--rank", "8", "--weight-dtype", "bfloat16",
                 "--adapter-option", "dtype=bfloat16")  # fmt: skip
    assert read_manifest(out)["extra"]["deploy"]["adapter"]["options"]["dtype"] == "bfloat16"
    policy = load_policy(str(out), "nav", trust_remote_code=True)
    layers = [m for m in policy.model.modules() if isinstance(m, SparseGluestickLinear)]
    assert layers and {m.weight_dtype for m in layers} == {torch.bfloat16}
    assert {p.dtype for p in policy.model.parameters() if p.is_floating_point()} == {torch.bfloat16}
    # an adapter named in the deployment (to add an action_map) keeps the recorded dtype
    named = load_policy(str(out), "nav", adapter="openvla", trust_remote_code=True,
                        action_map={"names": ["x"], "order": ["x"]})  # fmt: skip
    assert {p.dtype for p in named.policy.model.parameters()} == {torch.bfloat16}
    note = runtime_summary(policy.model).modes
    k = kernel()
    if k is not None and k.use_tiles():
        assert "AMX tiles from 4 tokens" in note, note
    else:
        assert "AMX" not in note, note
    frame = np.random.default_rng(1).integers(0, 255, (16, 16, 3), np.uint8)
    assert policy.predict(frame, "pick up the cup").shape == (7,)
    fp32 = load_policy(str(out), "nav", trust_remote_code=True, dtype="float32")
    inputs = fp32.inputs(frame, "pick up the cup")
    with torch.no_grad():
        want = fp32.model(**inputs).logits
        got = policy.model(**policy.inputs(frame, "pick up the cup")).logits.float()
    assert (got - want).abs().max() < 5e-2 * want.abs().max()
    with pytest.raises(ValueError, match="dtype 'float8' is not one of float32, bfloat16"):
        load_policy(str(out), "nav", trust_remote_code=True, dtype="float8")
    # an fp16-valued artifact run in bf16 says why it is not on the tiles
    _, fp16_artifact = built
    mixed = load_policy(str(fp16_artifact), "nav", trust_remote_code=True, dtype="bfloat16")
    if k is not None and k.use_tiles():
        assert "prune with --weight-dtype bfloat16" in runtime_summary(mixed.model).modes


def test_weight_dtype_is_refused_where_it_cannot_apply(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--weight-dtype", "bfloat16",
         "-o", str(tmp_path / "x")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "--weight-dtype applies to checkpoint folders" in done.stderr


def test_the_text_adapter_computes_in_the_dtype_it_is_given(tmp_path) -> None:
    """`adapter: text` with `dtype: bfloat16` (the option `openvla` takes too): every parameter
    is bf16, the answer is the checkpoint's own greedy answer in bf16 (a user's transformers
    code, independent of the adapter's), and a dtype that is not one is refused by name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vla_pruned_ros.models.registry import load_policy
    from vla_pruned_ros.models.text_action import NAVILA_PROMPT

    folder = write_text_action_fixture(tmp_path / "text_llama")
    rules = [{"pattern": r"^\s*(\d+)", "action": [0.1, 0.0], "per_unit": [0.0, 0.01]}]
    policy = load_policy(str(folder), "nav", adapter="text", rules=rules, max_new_tokens=4,
                         dtype="bfloat16")  # fmt: skip
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    instruction = "go to the door"
    action = policy.predict(np.zeros((16, 16, 3), np.uint8), instruction)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                 dtype=torch.bfloat16).eval()  # fmt: skip
    inputs = tokenizer(NAVILA_PROMPT.format(instruction=instruction), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert policy.last_text == text
    number = float(text.split()[0])
    np.testing.assert_allclose(action, [0.1, 0.01 * number], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="dtype 'half' is not one of"):
        load_policy(str(folder), "nav", adapter="text", rules=rules, dtype="half")


def test_an_action_map_given_at_deployment_replaces_the_recorded_one(built, tmp_path) -> None:
    """An artifact that records an action_map (vla-prune --adapter-option action_map=...),
    loaded with another one and the adapter named (a bringup's overrides): the deployment's
    map applies, the recorded one is not passed to the adapter as an option."""
    from vla_pruned_ros.models.registry import load_policy

    folder, _ = built
    recorded = '{"names": ["x"], "order": ["x"]}'
    out = _prune(folder, tmp_path / "mapped", "--rank", "8", "--adapter-option",
                 f"action_map={recorded}")  # fmt: skip
    given = {"names": ["linear_x", "angular_z"], "order": ["x", "yaw"]}
    for adapter in ("", "openvla"):
        policy = load_policy(str(out), "nav", adapter=adapter, trust_remote_code=True,
                             action_map=given)  # fmt: skip
        assert policy.info.action_names == ("linear_x", "angular_z"), adapter
    assert load_policy(str(out), "nav", trust_remote_code=True).info.action_names == ("x",)
