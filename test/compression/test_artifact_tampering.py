"""A tampered artifact is refused with the file and tensor named: an unlisted file dropped beside
verified ones, a key stored twice, and content that is corrupt but re-checksummed (a forger who
re-signs the manifest) all fail as `ArtifactError`s at load, never load silently or as raw
RuntimeError/KeyError. Files are readable by other users (0644 / 0755)."""

from __future__ import annotations

import hashlib
import json
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vla_pruned_ros.compression import ArtifactError, gluestick, load_artifact, prune, save_artifact
from vla_pruned_ros.compression.artifact import (
    _canonical,
    attach_files,
    read_manifest,
    sha256_file,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.Tanh(), nn.LayerNorm(8))


@pytest.fixture
def art(tmp_path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    dense = _model()
    model = gluestick(dense, prune(dense, "magnitude", "2:4"), 4, factor_dtype="float32")
    return save_artifact(model, tmp_path / "art"), model


def _resign(folder: Path) -> None:
    """What a forger does: checksum every file again and re-sign the manifest, so only the
    content's own consistency is left to catch the change."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {
        f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.name != "manifest.json"
    }
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _edit(folder: Path, name: str, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(str(folder / name))
    change(tensors)
    save_file(tensors, str(folder / name))
    _resign(folder)


def test_an_unlisted_shard_is_refused_and_named(art) -> None:
    folder, model = art
    x = torch.randn(5, 16)
    assert torch.equal(load_artifact(folder, _model, mode="materialize")(x), model(x))
    # the attack: a head bias of 50 in an extra shard drove the action to its limits
    save_file({"2.bias": torch.full((8,), 50.0)}, str(folder / "pruned-00001.safetensors"))
    with pytest.raises(ArtifactError, match=r"does not list.*pruned-00001\.safetensors"):
        load_artifact(folder, _model)
    (folder / "pruned-00001.safetensors").unlink()
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("hi")
    with pytest.raises(ArtifactError, match=r"sub/notes\.txt"):
        load_artifact(folder, _model)


def test_a_key_in_two_listed_files_is_refused_not_overridden(art) -> None:
    folder, _ = art
    save_file({"2.bias": torch.full((8,), 50.0)}, str(folder / "pruned-00001.safetensors"))
    _resign(folder)  # listed and checksummed: still no file may override another's tensor
    with pytest.raises(ArtifactError, match=r"'2\.bias' is stored in both"):
        load_artifact(folder, _model)


def _zero_indices(t: dict) -> None:
    t["2.indices"] = torch.zeros_like(t["2.indices"])  # every index 0: duplicate positions


def _short_indices(t: dict) -> None:
    t["2.indices"] = t["2.indices"][:-3].clone()


def _wrong_bias(t: dict) -> None:
    t["2.bias"] = torch.zeros(3)


def _flat_values(t: dict) -> None:
    t["2.values"] = t["2.values"].reshape(-1).clone()


def _drop_weight_key(t: dict) -> None:
    t.pop("0.values")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_zero_indices, r"2\.indices does not name 2 distinct positions"),
        (_short_indices, r"2\.indices is torch.uint8 \(\d+,\), expected"),
        (_wrong_bias, r"2\.bias is torch.float32 \(3,\), expected a float \(8,\)"),
        (_flat_values, r"2\.values has shape \(128,\), expected \(8, 16\)"),
        (_drop_weight_key, r"has no tensor '0\.values'"),
    ],
)
def test_corrupt_but_checksummed_tensors_are_artifact_errors(art, change, match) -> None:
    folder, _ = art
    _edit(folder, "pruned.safetensors", change)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(folder, _model)


def test_a_header_that_lies_about_a_shape_is_named(art) -> None:
    folder, _ = art
    data = (folder / "factors.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["0.a"]["shape"] = [32, 5]  # bytes for (32, 4)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (folder / "factors.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    _resign(folder)
    with pytest.raises(ArtifactError, match=r"factors\.safetensors.*'0\.a' declares shape"):
        load_artifact(folder, _model)


def test_a_weights_tensor_of_the_wrong_shape_is_named(art) -> None:
    folder, _ = art
    _edit(folder, "weights.safetensors", lambda t: t.update({"4.weight": torch.zeros(3)}))
    with pytest.raises(ArtifactError, match=r"weights\.safetensors.*4\.weight"):
        load_artifact(folder, _model)


def test_a_manifest_entry_missing_a_field_is_an_artifact_error(art) -> None:
    folder, _ = art
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["layers"]["2"]["storage"]
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"layer '2' has no valid 'storage' field"):
        load_artifact(folder, _model)


def test_artifacts_are_readable_by_other_users(art) -> None:
    folder, _ = art
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_files_attached_through_a_relative_path_are_listed_and_readable(
    art, tmp_path, monkeypatch
) -> None:
    """`vla-prune --output art` passes a relative folder to attach_files (processor files)."""
    folder, _ = art
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.chdir(folder.parent)
    attach_files(Path(folder.name), {"processor/tokenizer.json": tmp_path / "tokenizer.json"})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "processor/tokenizer.json" in manifest["files"]
    assert stat.S_IMODE((folder / "processor").stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "processor/tokenizer.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o644
    read_manifest(folder, verify=True)  # the re-signed manifest verifies
