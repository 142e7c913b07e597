"""The default runtime mode (`auto`): sparse on CPU with no dense copy of a pruned layer,
materialize where the kernel cannot serve a layer, said per layer; what vla-inspect predicts a
load will hold equals what the load holds."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import warnings

import torch
from torch import nn

from vla_pruned_ros.compression import (
    gluestick,
    load_artifact,
    prune,
    read_manifest,
    runtime_summary,
    save_artifact,
)
from vla_pruned_ros.compression.runtime_modes import expected_resident
from vla_pruned_ros.compression.sparse_runtime import SparseGluestickLinear


class _Net(nn.Module):
    """Layer shapes that no other tensor of the model has, so a dense copy would be seen."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(48, 72)
        self.down = nn.Linear(72, 40, bias=False)
        self.head = nn.Linear(40, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 6 * 6, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _artifact(tmp_path, make=_Net, conv=False, pattern="2:4"):
    torch.manual_seed(0)
    dense = make()
    pruned = prune(dense, "magnitude", pattern, exclude=["head"], conv=conv, progress=False)
    model = gluestick(dense, pruned, 4, factor_dtype="int8", progress=False)
    return dense, save_artifact(model, tmp_path / "art", weight_dtype="float16")


def test_auto_on_cpu_is_sparse_with_no_dense_copy(tmp_path) -> None:
    dense, folder = _artifact(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default mode's choices are its policy: no warning
        model = load_artifact(folder, _Net)
    assert model.artifact["mode"] == "auto"
    assert model.artifact["layer_modes"] == {"up": "sparse", "down": "sparse"}
    assert not model.artifact["fallbacks"]
    dense_shapes = {tuple(dense.get_submodule(n).weight.shape) for n in ("up", "down")}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert tuple(t.shape) not in dense_shapes, f"{name} is a dense copy of a pruned layer"
    for name in ("up", "down"):
        assert isinstance(model.get_submodule(name), SparseGluestickLinear)
    dense_fp16 = sum(p.numel() * 2 for p in dense.parameters())
    summary = runtime_summary(model)
    assert summary.resident_bytes < dense_fp16
    assert summary.layers == {"sparse": 2} and summary.modes.startswith("sparse 2/2")
    x = torch.randn(5, 48)
    reference = load_artifact(folder, _Net, mode="materialize")
    assert runtime_summary(reference).layers == {"materialize": 2}
    assert runtime_summary(reference).resident_bytes > summary.resident_bytes
    with torch.no_grad():
        err = (model(x) - reference(x)).abs().max() / reference(x).abs().max()
    assert float(err) < 1e-3


def test_predicted_resident_bytes_equal_the_loaded_model(tmp_path) -> None:
    _, folder = _artifact(tmp_path, pattern="unstructured:0.5")
    manifest = read_manifest(folder)
    for mode in (None, "materialize"):
        predicted = expected_resident(folder, manifest, mode)
        loaded = runtime_summary(load_artifact(folder, _Net, mode=mode))
        assert predicted["total_bytes"] == loaded.resident_bytes, mode
        assert predicted["layers"] == loaded.layers, mode
    on_cuda = expected_resident(folder, manifest, None, device="cuda")  # the policy, no GPU
    assert on_cuda["layers"] == {"materialize": 2}
    assert on_cuda["total_bytes"] > expected_resident(folder, manifest)["total_bytes"]


def test_auto_keeps_convolutions_materialized_and_says_so(tmp_path) -> None:
    _, folder = _artifact(tmp_path, _ConvNet, conv=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_artifact(folder, _ConvNet)
    assert model.artifact["layer_modes"] == {"conv": "materialize", "fc": "sparse"}
    assert "convolution" in model.artifact["fallbacks"]["conv"]
    assert "materialize 1/2 (convolution" in runtime_summary(model).modes
    with warnings.catch_warnings(record=True) as caught:  # asked for explicitly: warned
        warnings.simplefilter("always")
        load_artifact(folder, _ConvNet, mode="sparse")
    assert any("stay materialized" in str(w.message) for w in caught)
    predicted = expected_resident(folder, read_manifest(folder))
    assert predicted["total_bytes"] == runtime_summary(model).resident_bytes


def test_auto_without_the_kernel_runs_the_pure_pytorch_path(tmp_path) -> None:
    """A machine without a compiler (VLA_SPARSE_KERNEL=0): still no dense copy, and said."""
    _, folder = _artifact(tmp_path)
    code = (
        "import torch\nfrom torch import nn\n"
        + inspect.getsource(_Net)
        + f"""
from vla_pruned_ros.compression import load_artifact, runtime_summary
m = load_artifact({str(folder)!r}, _Net)
assert m.artifact["layer_modes"] == {{"up": "sparse", "down": "sparse"}}, m.artifact
assert not m.up.compiled
print(runtime_summary(m).modes)
"""
    )
    env = {**os.environ, "VLA_SPARSE_KERNEL": "0", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pure-PyTorch path (disabled by VLA_SPARSE_KERNEL=0)" in done.stdout


def test_the_dtypes_held_and_computed_in_are_reported(tmp_path) -> None:
    from vla_pruned_ros.compression.memory import compute_dtype, float_dtypes

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8, bias=False).to(torch.bfloat16)  # 128 bytes
            self.b = self.a  # shared: counted once
            self.register_buffer("factors", torch.zeros(96))  # float32, 384 bytes
            self.register_buffer("index", torch.zeros(1000, dtype=torch.int64))  # not a float

    mixed = Mixed()
    assert float_dtypes(mixed) == "float32 75%, bfloat16 25%"
    assert compute_dtype(mixed) == "bfloat16"  # the parameters', not the largest buffer's
    ints = nn.Module()
    ints.register_buffer("ids", torch.zeros(3, dtype=torch.int64))
    assert float_dtypes(ints) == compute_dtype(ints) == "none"
    _, folder = _artifact(tmp_path)
    summary = runtime_summary(load_artifact(folder, _Net))
    # the sparse values stay at their stored fp16 (the kernel reads them so), the rest float32;
    # the int8 factors are not floats
    assert summary.compute_dtype == "float32" and summary.dtypes.startswith("float16")
    half = runtime_summary(load_artifact(folder, _Net, dtype=torch.bfloat16))
    assert half.compute_dtype == "bfloat16" and "bfloat16" in half.dtypes
