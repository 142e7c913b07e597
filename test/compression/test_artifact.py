"""The artifact: packed storage, bit-exact round trips in every runtime mode, checksums that
name the corrupt file, and the memory report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vla_pruned_ros.compression import (
    ArtifactError,
    GluestickLinear,
    gluestick,
    load_artifact,
    memory_report,
    prune,
    read_manifest,
    save_artifact,
)
from vla_pruned_ros.compression.packing import pack, unpack
from vla_pruned_ros.compression.patterns import parse_pattern, prune_mask


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 4),
        nn.LayerNorm(4),
    )


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    torch.manual_seed(0)
    return _model()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 5).map(lambda k: 8 * k),
    st.integers(0, 10_000),
    st.sampled_from(["2:4", "4:8", "1:8", "unstructured:0.5", "unstructured:0.9"]),
    st.sampled_from([torch.float32, torch.float16]),
)
def test_packing_round_trips_bit_exactly(d_out, d_in, seed, spec, dtype) -> None:
    w = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(seed)).to(dtype)
    w = torch.where(prune_mask(w.abs(), spec), w, torch.zeros_like(w))
    packed = pack(w, spec)
    back = unpack(packed, spec, tuple(w.shape))
    assert torch.equal(back.view(torch.uint8), w.view(torch.uint8))
    pattern = parse_pattern(spec)
    if pattern.kind == "nm":  # values + ceil(log2 M)-bit indices, never dense zeros
        assert packed["values"].numel() == w.numel() * pattern.n // pattern.m
        assert packed["indices"].numel() == -(
            -packed["values"].numel() * (pattern.m.bit_length() - 1) // 8
        )
    else:
        assert packed["bitmask"].numel() == -(-w.numel() // 8)


def test_packing_refuses_a_weight_that_breaks_its_pattern() -> None:
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        pack(torch.ones(2, 8), "2:4")


def _corrected(dense: nn.Module, spec: str, factor_dtype: str) -> nn.Module:
    pruned = prune(dense, "magnitude", spec, exclude=["4"])
    return gluestick(dense, pruned, 6, factor_dtype=factor_dtype)


@pytest.mark.parametrize("spec", ["2:4", "unstructured:0.6"])
@pytest.mark.parametrize("factor_dtype", ["float32", "float16", "int8"])
def test_round_trip_is_bit_exact_in_every_mode(tmp_path, dense, spec, factor_dtype) -> None:
    model = _corrected(dense, spec, factor_dtype)
    folder = save_artifact(model, tmp_path / "art", source_model="tiny", note="hello")
    x = torch.randn(7, 16)
    expected = model(x)
    state = model.state_dict()
    for mode in ("materialize", "packed", "semi_structured"):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            loaded = load_artifact(folder, _model, mode=mode)
        assert torch.equal(loaded(x), expected), mode
        if mode == "materialize":
            got = loaded.state_dict()
            assert set(got) == set(state)
            assert all(torch.equal(got[k], v) for k, v in state.items())
        assert loaded.artifact["mode"] == mode
    assert loaded.artifact["fallbacks"]  # no CUDA here, or not 2:4: said, not hidden
    manifest = read_manifest(folder)
    assert manifest["source"]["model_id"] == "tiny" and manifest["extra"]["note"] == "hello"
    assert manifest["layers"]["0"]["rank"] == 6
    assert manifest["layers"]["0"]["factor_dtype"] == factor_dtype
    assert manifest["layers"]["0"]["spectrum"]["energy_kept"] > 0
    assert "4" not in manifest["layers"]


def test_the_same_model_saved_twice_gives_the_same_bytes(tmp_path, dense) -> None:
    """Every tensor file, and so its checksum in the manifest, is the same bytes each time the
    same model is saved (safetensors wrote two metadata keys in hash-map order: about half of
    the saves differed), so a rebuilt artifact can be told from a changed one by its checksums."""
    model = _corrected(dense, "2:4", "float16")
    saved = [save_artifact(model, tmp_path / f"art{i}", source_model="tiny") for i in range(6)]
    manifests = [read_manifest(folder) for folder in saved]
    assert len({json.dumps(m["files"], sort_keys=True) for m in manifests}) == 1
    for name in manifests[0]["files"]:
        assert len({(folder / name).read_bytes() for folder in saved}) == 1, name


def test_packed_mode_holds_less_and_reports_it(tmp_path, dense) -> None:
    model = _corrected(dense, "2:4", "int8")
    folder = save_artifact(model, tmp_path / "art", weight_dtype="float16")
    mat = load_artifact(folder, _model, mode="materialize")
    packed = load_artifact(folder, _model, mode="packed")
    r_mat, r_packed = memory_report(mat), memory_report(packed)
    assert r_packed["resident_bytes"] < r_mat["resident_bytes"]
    # fp16 values of a 2:4 layer: half the values plus 2-bit indices = 9/16 of dense fp16
    layer = dense.get_submodule("2")
    expected = layer.weight.numel() // 2 * 2 + layer.weight.numel() // 2 // 4
    assert (
        packed.get_submodule("2").values.nbytes + packed.get_submodule("2").indices.nbytes
        == expected
    )
    x = torch.randn(3, 16)
    assert torch.equal(packed(x), mat(x))


def test_memory_report_counts_every_part(dense) -> None:
    model = _corrected(dense, "2:4", "int8")
    report = memory_report(model, value_bytes=2)
    params = sum(p.numel() for p in dense.parameters())
    assert report["params_dense"] == params
    assert report["dense_fp16_bytes"] == 2 * params and report["dense_fp32_bytes"] == 4 * params
    pruned_numel = sum(dense.get_submodule(n).weight.numel() for n in ("0", "2"))
    assert report["pruned_packed_bytes"] == pruned_numel // 2 * 2 + pruned_numel // 2 // 4
    rank = 6
    assert report["factor_bytes"] == rank * (32 + 16) + rank * (32 + 32) + 4 * 4  # int8 + scales
    assert report["total_bytes"] == (
        report["pruned_packed_bytes"] + report["factor_bytes"] + report["other_bytes"]
    )
    assert report["ratio_to_dense_fp16"] == pytest.approx(
        report["total_bytes"] / report["dense_fp16_bytes"], abs=1e-4
    )


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10**6))
def test_a_flipped_byte_in_any_file_is_caught_and_named(tmp_path_factory, offset) -> None:
    torch.manual_seed(0)
    model = _corrected(_model(), "2:4", "int8")
    folder = save_artifact(model, tmp_path_factory.mktemp("a") / "art")
    for file in sorted(folder.iterdir()):
        original = file.read_bytes()
        _flip(file, offset)
        with pytest.raises(ArtifactError, match=file.name):
            load_artifact(folder, _model)
        file.write_bytes(original)
    load_artifact(folder, _model)  # and intact again


def test_clear_errors_for_missing_files_tensors_and_shapes(tmp_path, dense) -> None:
    model = _corrected(dense, "2:4", "float32")
    folder = save_artifact(model, tmp_path / "art")
    with pytest.raises(ArtifactError, match="exists and is not empty"):
        save_artifact(model, folder)

    def wider() -> nn.Module:
        m = _model()
        m[2] = nn.Linear(32, 64)
        m[4] = nn.Linear(64, 4)
        return m

    with pytest.raises(ArtifactError, match=r"pruned.safetensors: layer 2 is \(32, 32\)"):
        load_artifact(folder, wider)
    with pytest.raises(ArtifactError, match="layer '0' is not in the model"):
        load_artifact(folder, lambda: nn.Sequential())
    with pytest.raises(ValueError, match="unknown runtime mode"):
        load_artifact(folder, _model, mode="turbo")

    # a manifest that lists a layer whose tensors are not in the file (re-signed, so only the
    # missing tensor is wrong)
    import hashlib

    from vla_pruned_ros.compression.artifact import _canonical

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["layers"]["4"] = dict(manifest["layers"]["2"], shape=[4, 32], rank=0)
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="pruned.safetensors has no tensor '4.values'"):
        load_artifact(folder, _model)
    (folder / "factors.safetensors").unlink()
    with pytest.raises(ArtifactError, match="factors.safetensors is missing"):
        load_artifact(folder, _model)
    with pytest.raises(ArtifactError, match="is not an artifact"):
        load_artifact(tmp_path, _model)


def test_skipped_keys_come_from_the_factory(tmp_path, dense) -> None:
    model = _corrected(dense, "2:4", "float32")
    folder = save_artifact(model, tmp_path / "art", skip_keys=["5.weight"])
    assert read_manifest(folder)["provided_by_factory"] == ["5.weight"]

    def factory() -> nn.Module:
        m = _model()
        with torch.no_grad():
            m[5].weight.copy_(dense[5].weight)
        return m

    x = torch.randn(2, 16)
    assert torch.equal(load_artifact(folder, factory, mode="materialize")(x), model(x))
    assert isinstance(load_artifact(folder, factory).get_submodule("0"), GluestickLinear)


def test_memory_report_counts_factors_at_their_stored_dtype_after_a_widening_load(tmp_path):
    """The loader widens fp16 factors to fp32 for CPU compute; the report's `factors` is what
    the artifact stores (2 bytes a value), not what the widened copy holds."""
    from torch import nn

    from vla_pruned_ros.compression import gluestick, load_artifact, memory_report, prune

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    model = gluestick(dense, prune(dense, "magnitude", "2:4"), 4, factor_dtype="float16")
    folder = save_artifact(model, tmp_path / "art")

    def skeleton() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))

    loaded = load_artifact(folder, skeleton, mode="materialize", dtype=torch.float32)
    assert loaded[0].a.dtype == torch.float32  # widened in memory
    values = 4 * (64 + 32) + 4 * (32 + 16)  # r (d_in + d_out) per layer
    scales = sum(
        t.numel() * t.element_size() for i in (0, 2) for t in (loaded[i].a_scale, loaded[i].b_scale)
    )
    assert memory_report(loaded, value_bytes=2)["factor_bytes"] == 2 * values + scales
