"""Every transformers family users bring compresses and loads back: tiny random LLaVA,
PaliGemma (Gemma's scaled word embeddings), Idefics3/SmolVLM, Qwen2.5-VL and Llama checkpoints
built in code go through magnitude (streamed) and Wanda (block by block) at full rank and
reload with the dense model's logits; the default layer selection of each is the README's
table (language-model blocks only: no vision tower, connector/projector, embedding or head)."""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest
import torch

from vla_pruned_ros.compression import read_manifest
from vla_pruned_ros.models.hf_checkpoint import (
    DEFAULT_EXCLUDE,
    OnlyExclude,
    compress_checkpoint,
    linear_layers,
    load_checkpoint_artifact,
    select,
)
from vla_pruned_ros.models.hf_sequential import sequential_compress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/checkpoint_fixtures.py
from checkpoint_fixtures import TINY_FAMILIES, write_tiny_family  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 40]])  # text only: no image token


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, tuple[Path, torch.Tensor]]:
    out = {}
    for family in TINY_FAMILIES:
        folder = tmp_path_factory.mktemp(re.sub(r"\W", "_", family))
        dense = write_tiny_family(family, folder)
        with torch.no_grad():
            out[family] = (folder, dense(input_ids=IDS).logits)
    return out


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_compress_reload_and_full_rank_gives_the_dense_logits(folders, tmp_path, family, method):
    folder, want = folders[family]
    out = tmp_path / "art"
    options = dict(weight_dtype=None, factor_dtype="float32", svd="exact", progress=False)
    if method == "magnitude":
        compress_checkpoint(folder, out, "2:4", 64, **options)
    else:
        sequential_compress(folder, out, "wanda", "2:4", 64, [IDS], **options)
    manifest = read_manifest(out)
    assert manifest["layers"] and all(e["rank"] > 0 for e in manifest["layers"].values())
    model = load_checkpoint_artifact(out)
    with torch.no_grad():
        got = model(input_ids=IDS).logits
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4 * max(1.0, float(want.abs().max()))


def _group(name: str) -> str:
    """The shortest dotted prefix of `name` a default exclude matches (the part kept dense)."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if any(fnmatch.fnmatch(prefix, g) for g in DEFAULT_EXCLUDE):
            return prefix
    return name


def _readme_table() -> dict[str, tuple[str, set[str]]]:
    text = README.read_text()
    section = text.split("### What each family compresses by default", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("family", "") and not set(cells[0]) <= set("-"):
            kept = {c.strip().strip("`") for c in cells[2].split(",")}
            rows[cells[0]] = (cells[1], kept)
    return rows


def test_default_selection_is_the_readme_table(folders) -> None:
    table = _readme_table()
    assert set(table) == set(TINY_FAMILIES)
    for family, (folder, _) in folders.items():
        names = linear_layers(folder)
        chosen = select(names, None, None)
        blocks, kept = table[family]
        assert all(n.startswith(blocks + ".") for n in chosen), (family, chosen)
        assert sorted(c for c in names if c.startswith(blocks + ".")) == sorted(chosen)
        assert {_group(n) for n in names if n not in chosen} == kept, family


def test_exclude_adds_to_the_defaults_and_no_default_exclude_drops_them(folders) -> None:
    folder, _ = folders["Idefics3"]
    names = linear_layers(folder)
    base = select(names, None, None)
    assert "model.connector.modality_projection.proj" not in base
    more = select(names, None, ["*layers.0.*"])  # adds: the connector stays excluded
    assert more == [n for n in base if ".layers.0." not in n]
    everything = select(names, None, OnlyExclude([]))
    assert "model.connector.modality_projection.proj" in everything and "lm_head" in everything


def test_a_processor_needing_a_missing_package_names_it(tmp_path) -> None:
    """Qwen2.5-VL's processor builds a video processor that needs torchvision; without it the
    calibration path says which package to install, not a raw ImportError."""
    import importlib.util
    import json

    from checkpoint_fixtures import _tokenizer

    from vla_pruned_ros.models.hf_checkpoint import CheckpointError
    from vla_pruned_ros.models.hf_sequential import calibration_inputs

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: nothing is missing")
    folder = tmp_path / "qwen"
    write_tiny_family("Qwen2.5-VL", folder)
    _tokenizer()[0].save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "patch_size": 2, "merge_size": 1, "temporal_patch_size": 1}))  # fmt: skip
    (folder / "processor_config.json").write_text('{"processor_class": "Qwen2_5_VLProcessor"}')
    image = torch.zeros(16, 16, 3, dtype=torch.uint8).numpy()
    with pytest.raises(CheckpointError, match=r"'torchvision'.*pip install torchvision"):
        calibration_inputs(folder, [image], ["go"], "{instruction}")


def test_vla_prune_exclude_adds_and_no_default_exclude_drops(folders, tmp_path) -> None:
    import subprocess

    folder, _ = folders["Idefics3"]

    def run(*extra: str) -> set[str]:
        out = tmp_path / f"art{len(list(tmp_path.iterdir()))}"
        done = subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model",
                               str(folder), "--pattern", "2:4", "-o", str(out), *extra],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return set(read_manifest(out)["layers"])

    added = run("--exclude", "*layers.0.*")
    assert added and not any(".layers.0." in n or "connector" in n for n in added)
    dropped = run("--no-default-exclude", "--exclude", "*vision*", "lm_head")
    assert "model.connector.modality_projection.proj" in dropped and "lm_head" not in dropped


def test_vla_prune_records_the_adapter_and_its_options(folders, tmp_path) -> None:
    import subprocess

    folder, _ = folders["LLaVA"]
    out = tmp_path / "art"
    done = subprocess.run([sys.executable, "-m", "vla_pruned_ros.cli.prune", "--model",
                           str(folder), "--pattern", "2:4", "-o", str(out), "--adapter",
                           "text_action", "--adapter-option", "max_new_tokens=8",
                           "--adapter-option", "pattern=turn (left|right)"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    adapter = read_manifest(out)["extra"]["deploy"]["adapter"]
    options = {"max_new_tokens": 8, "pattern": "turn (left|right)"}
    assert adapter == {"name": "text_action", "options": options}
