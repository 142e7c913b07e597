"""The `sparse` runtime: the compiled kernel against `materialize`, malformed packed tensors,
loading artifacts straight into the packed layout, and the pure-PyTorch fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from vla_pruned_ros.compression import load_artifact, save_artifact
from vla_pruned_ros.compression.gluestick import GluestickLinear, gap_factors
from vla_pruned_ros.compression.kernels import kernel
from vla_pruned_ros.compression.packing import pack, pack_bits, unpack, unpack_bits
from vla_pruned_ros.compression.sparse_runtime import SparseGluestickLinear, to_sparse


def _pruned(d_out: int, d_in: int, pattern: str, gen: torch.Generator) -> torch.Tensor:
    w = torch.randn(d_out, d_in, generator=gen)
    if pattern.startswith("unstructured"):
        return (w * (torch.rand(d_out, d_in, generator=gen) > 0.5)).half().float()
    n, m = map(int, pattern.split(":"))
    groups = w.reshape(d_out, -1, m)
    keep = groups.abs().topk(n, -1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return (groups * mask).reshape(d_out, d_in).half().float()


def _layer(d_out, d_in, pattern, rank, factor_dtype, bias, seed=0) -> GluestickLinear:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(d_out, d_in, generator=gen)
    pruned = _pruned(d_out, d_in, pattern, gen)
    lin = nn.Linear(d_in, d_out, bias=bias)
    lin.weight.data = pruned
    factors = gap_factors(dense, pruned, rank) if rank else None
    return GluestickLinear(lin, factors, factor_dtype, pattern, "magnitude")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_the_compiled_kernel_is_built_and_vectorised_where_the_cpu_can() -> None:
    k = kernel()
    assert k is not None, "the sparse kernel must build here (g++ and ninja are installed)"
    flags = open("/proc/cpuinfo").read()
    if all(f" {f}" in flags for f in ("avx2", "fma", "f16c")):
        assert k.vectorized()


def test_a_built_kernel_loads_without_the_build_tools() -> None:
    """Once built, a fresh process imports the cached library directly (a robot's every
    start-up): no setuptools or cpp_extension import, no ninja check, and the same kernel."""
    assert kernel() is not None
    vectorized = kernel().vectorized()
    code = ("import sys, torch\n"
            "from vla_pruned_ros.compression.kernels import kernel\n"
            "k = kernel()\n"
            f"print(k is not None and k.vectorized() == {vectorized},"
            " 'setuptools' in sys.modules or 'torch.utils.cpp_extension' in sys.modules)"
            )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr[-2000:]


def test_the_kernel_runs_on_torch_s_threads() -> None:
    """The kernel's parallel regions run on as many threads as torch is set to: it was built
    without OpenMP before, so ATen's inline parallel_for ran every call on one thread and the
    second core of every 2-thread measurement sat idle."""
    k = kernel()
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            assert k.parallel_threads(64) == threads
    finally:
        torch.set_num_threads(before)


SHAPES = [(37, 20), (48, 1028), (5, 8), (33, 12), (130, 264)]


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "unstructured:0.5"])
@pytest.mark.parametrize("values", [torch.float16, torch.bfloat16])
def test_kernel_equals_materialize(pattern, values) -> None:
    for d_out, d_in in SHAPES:
        m = 1 if pattern.startswith("unstructured") else int(pattern.split(":")[1])
        if d_in % m:
            continue
        for rank, factor_dtype in ((0, "float16"), (8, "float16"), (4, "int8")):
            for tokens in (1, 3, 9, 300):
                ref_layer = _layer(d_out, d_in, pattern, rank, factor_dtype, tokens % 2 == 1)
                ref_layer.weight.data = ref_layer.weight.data.to(values).float()
                sparse = to_sparse(ref_layer, values)
                assert isinstance(sparse, SparseGluestickLinear) and sparse.compiled
                x = torch.randn(tokens, d_in)
                case = (pattern, values, d_out, d_in, rank, factor_dtype, tokens)
                assert _rel(sparse(x), ref_layer(x)) < 1e-3, case
    x3 = torch.randn(2, 5, d_in)  # 3-D input of the last shape
    assert _rel(sparse(x3), ref_layer(x3)) < 1e-3
    assert sparse(x3).shape == (2, 5, d_out)


@pytest.mark.parametrize("values", [torch.float16, torch.bfloat16])
def test_the_avx512_and_avx2_dots_both_equal_the_dense_layer(values) -> None:
    """Where the CPU has AVX-512F, the 2:4 few-token dot takes its own path (32 inputs per
    step); it and the AVX2 path, forced in turn, each equal the dense layer, on widths with a
    tail of 1-7 groups past the last 32 inputs; `kernel_build` names the path taken. Where the
    CPU lacks it, the switch cannot turn it on."""
    from vla_pruned_ros.compression.kernels import kernel_build

    k = kernel()
    # on by default exactly where the CPU has it, in a vectorised build (the portable one,
    # VLA_SPARSE_KERNEL_PORTABLE=1, leaves every SIMD path out)
    has = "avx512f" in open("/proc/cpuinfo").read().split() and k.vectorized()
    assert k.use_avx512() == has
    limits = k.set_tuning()  # as it is, restored after
    k.set_tuning(4)  # the few-token path for up to 4 tokens
    try:
        for on in (False, True):
            assert k.use_avx512(int(on)) == (on and has)
            assert kernel_build().split("+")[1] == k.simd()
            assert k.simd() == ("avx512" if on and has else "avx2" if k.vectorized()
                                else "portable")  # fmt: skip
            for d_out, d_in in ((7, 32), (9, 36), (16, 60), (33, 1028), (5, 4100), (3, 8)):
                for tokens in (1, 2, 4):
                    layer = _layer(d_out, d_in, "2:4", 0, "float16", tokens == 1, seed=d_in)
                    layer.weight.data = layer.weight.data.to(values).float()
                    sparse = to_sparse(layer, values)
                    x = torch.randn(tokens, d_in, generator=torch.Generator().manual_seed(1))
                    case = (on, values, d_out, d_in, tokens)
                    assert _rel(sparse(x), layer(x)) < 1e-5, case
    finally:
        k.use_avx512(int(has))
        k.set_tuning(limits[0])


def test_casting_the_model_casts_the_bias_only() -> None:
    """`model.to(bf16)` must not narrow what the artifact stores: values, indices and factors
    keep their dtypes, and so do the int8 factors' fp32 scales (a bf16 scale moved every
    dequantized factor by up to 0.4 %); the bias follows the model."""
    ref = _layer(40, 64, "2:4", 8, "int8", True)
    sparse = to_sparse(ref, torch.float16)
    stored = {k: (t.dtype, t.clone()) for k, t in sparse._buffers.items()}
    sparse.to(torch.bfloat16)
    for key, (dtype, before) in stored.items():
        assert sparse._buffers[key].dtype == dtype and torch.equal(sparse._buffers[key], before)
    assert sparse.a_scale.dtype == torch.float32 and sparse.bias.dtype == torch.bfloat16


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "unstructured:0.5"])
def test_the_amx_tile_path_equals_the_dense_layer_in_bf16(pattern) -> None:
    """bf16 values fed bf16 inputs from the tile-token limit on take the AMX path where the CPU
    has AMX-BF16 (on by default exactly there): against the dense layer in fp32 on the same
    bf16 weights and inputs, within bf16 output rounding, on shapes that leave partial row
    groups (d_out % 32), partial 32-column steps (d_in % 32, 2:4 rows ending mid-byte),
    partial and odd token tiles (17, 45 tokens), 3-D inputs, bias, fp16 and int8 factors over
    more than one step (rank 40). The same inputs with the path off give other bits (another
    summation order), so the path really ran. Where the CPU lacks AMX the switch cannot turn
    it on, and the same checks hold for the path that runs instead."""
    from vla_pruned_ros.compression.kernels import kernel_build

    k = kernel()
    flags = open("/proc/cpuinfo").read().split()
    has = {"amx_bf16", "amx_tile"} <= set(flags) and k.vectorized()
    assert k.use_tiles() == has
    assert k.set_tuning()[3] == 4  # the default limit: from 4 tokens on
    assert kernel_build().endswith("+amx") == has
    gen = torch.Generator().manual_seed(13)
    differs = []
    try:
        for d_out, d_in, rank, factor_dtype, bias in (
            (70, 200, 40, "int8", True),
            (33, 4100, 0, "float16", False),
            (300, 1032, 16, "float16", True),
        ):
            if pattern == "4:8" and d_in % 8:
                continue
            ref = _layer(d_out, d_in, pattern, rank, factor_dtype, bias, seed=d_in)
            ref.weight.data = ref.weight.data.bfloat16().float()
            sparse = to_sparse(ref, torch.bfloat16).to(torch.bfloat16)
            for shape in ((16, d_in), (17, d_in), (45, d_in), (256, d_in), (2, 20, d_in)):
                x = torch.randn(*shape, generator=gen).bfloat16()
                want = ref(x.float())
                assert k.use_tiles(1) == has
                got = sparse(x)
                assert got.dtype == torch.bfloat16 and got.shape == want.shape
                case = (pattern, d_out, d_in, rank, factor_dtype, shape)
                assert _rel(got.float(), want) < 1e-2, case
                k.use_tiles(0)
                differs.append(not torch.equal(sparse(x), got))
    finally:
        k.use_tiles(int(has))
    assert any(differs) == has


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "unstructured:0.5"])
def test_few_token_and_many_token_paths_equal_the_dense_reference(pattern) -> None:
    """Both kernel paths (per-row compact dot; panels of 16 tokens through the micro-kernel),
    each forced for the same inputs, against the dense layer: shapes not multiples of 16 (2:4
    rows that start mid-byte when d_in % 8 == 4), token counts that leave a partial panel,
    bias/no bias, factors absent/fp16/int8, 2-D and 3-D inputs."""
    k = kernel()
    default = k.set_tuning(0, 0)
    gen = torch.Generator().manual_seed(11)
    try:
        for d_out, d_in, rank, factor_dtype, bias in (
            (37, 20, 0, "float16", True),
            (33, 72, 4, "int8", False),
            (130, 264, 8, "float16", True),
            (16, 4096, 0, "float16", False),
        ):
            if not pattern.startswith("unstructured") and d_in % int(pattern.split(":")[1]):
                continue
            ref = _layer(d_out, d_in, pattern, rank, factor_dtype, bias)
            sparse = to_sparse(ref, torch.float16)
            for shape in ((1, d_in), (5, d_in), (17, d_in), (2, 20, d_in)):
                x = torch.randn(*shape, generator=gen)
                want = ref(x)
                for path, small in (("few", 10**6), ("many", 1)):
                    k.set_tuning(small, 0)
                    got = sparse(x)
                    assert got.shape == want.shape
                    case = (pattern, d_out, d_in, rank, factor_dtype, bias, shape, path)
                    assert _rel(got, want) < 1e-3, case
    finally:
        k.set_tuning(*default)


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "unstructured:0.5"])
def test_blocked_many_token_path_at_16_and_256_tokens(pattern) -> None:
    """The column-blocked path at the token counts the bench measures (16: one panel; 256:
    sixteen, taken two at a time, plus an odd count leaving a lone partial panel), with blocks
    forced narrow so a row spans many blocks, the last block is partial (d_in % 48 != 0) and
    the A part spans blocks of its own (rank 40 > 32 columns); int8 and fp16 factors, bias,
    2-D and 3-D inputs, rows decoded one at a time and a whole group at once."""
    k = kernel()
    default = k.set_tuning(0, 0, 0)
    gen = torch.Generator().manual_seed(12)
    try:
        for d_out, d_in, rank, factor_dtype, bias in (
            (70, 200, 40, "int8", True),
            (33, 96, 8, "float16", False),
        ):
            ref = _layer(d_out, d_in, pattern, rank, factor_dtype, bias)
            sparse = to_sparse(ref, torch.bfloat16 if bias else torch.float16)
            ref.weight.data = ref.weight.data.to(sparse.weight_dtype).float()
            for shape in ((16, d_in), (256, d_in), (3, 45, d_in)):
                x = torch.randn(*shape, generator=gen)
                want = ref(x)
                for cols, sub in ((0, 0), (48, 1), (32, 32)):
                    k.set_tuning(1, cols, sub)
                    got = sparse(x)
                    assert got.shape == want.shape
                    case = (pattern, d_out, d_in, rank, factor_dtype, shape, cols, sub)
                    assert _rel(got, want) < 1e-3, case
    finally:
        k.set_tuning(*default)


def test_nm_index_check_in_place_and_in_slices() -> None:
    """The compiled in-place index check and the sliced pure-PyTorch one agree, slices that do
    not divide the layer included."""
    from vla_pruned_ros.compression.packing import nm_indices_valid, nm_indices_valid_sliced

    for pattern, (n, m) in (("4:8", (4, 8)), ("2:4", (2, 4))):
        w = _pruned(64, 96, pattern, torch.Generator().manual_seed(4))
        bits = pack(w.half(), pattern)["indices"]
        bad = bits.clone()
        bad[-1] = 0xFF if m == 8 else 0x00  # 4:8: out of order; 2:4: a duplicate position
        groups = 64 * 96 // m
        assert nm_indices_valid(bits, n, m, 64, 96)
        assert not nm_indices_valid(bad, n, m, 64, 96)
        for per_slice in (1, 7, 100, 10**6):
            assert nm_indices_valid_sliced(bits, n, m, groups, per_slice), (pattern, per_slice)
            assert not nm_indices_valid_sliced(bad, n, m, groups, per_slice), (pattern, per_slice)


def test_malformed_packed_tensors_raise() -> None:
    layer = _layer(16, 32, "2:4", 0, "float16", True)
    packed = pack(layer.weight.half(), "2:4")
    k = kernel()
    k.validate_nm(packed["indices"], 2, 4, 16, 32)
    with pytest.raises(RuntimeError, match="bytes"):
        k.validate_nm(packed["indices"][:-1].contiguous(), 2, 4, 16, 32)
    bad = packed["indices"].clone()
    bad[3] = 0  # both indices of a group 0: a duplicate position
    with pytest.raises(RuntimeError, match="distinct positions"):
        k.validate_nm(bad, 2, 4, 16, 32)
    with pytest.raises(RuntimeError, match="distinct positions"):
        SparseGluestickLinear(
            {"values": packed["values"], "indices": bad}, (16, 32), "2:4", "m", None, None, "int8"
        )
    with pytest.raises(RuntimeError, match="values hold"):
        k.nm_linear(torch.randn(1, 32), packed["values"][:-1].contiguous(), packed["indices"],
                    2, 4, 16, 32, None, None, None, 1.0, 1.0)  # fmt: skip
    # 4:8: 3-bit indices; an index byte naming position >= ... cannot exist, order is checked
    w8 = _pruned(8, 16, "4:8", torch.Generator().manual_seed(1))
    p8 = pack(w8.half(), "4:8")
    k.validate_nm(p8["indices"], 4, 8, 8, 16)
    flipped = p8["indices"].clone()
    flipped[0] = 0xFF
    with pytest.raises(RuntimeError, match="distinct positions"):
        k.validate_nm(flipped, 4, 8, 8, 16)
    um = pack(
        _pruned(8, 12, "unstructured", torch.Generator().manual_seed(2)).half(), "unstructured:0.5"
    )
    k.bitmask_row_offsets(um["bitmask"], 8, 12, um["values"].numel())
    with pytest.raises(RuntimeError, match="marks"):
        k.bitmask_row_offsets(um["bitmask"], 8, 12, um["values"].numel() + 1)
    with pytest.raises(RuntimeError, match="bytes"):
        k.bitmask_row_offsets(um["bitmask"][:-1].contiguous(), 8, 12, um["values"].numel())


def test_table_unpack_equals_the_bit_stream() -> None:
    gen = torch.Generator().manual_seed(3)
    for bits in (1, 2, 3, 4, 5, 8):
        for count in (1, 7, 8, 9, 1001):
            v = torch.randint(0, 1 << bits, (count,), generator=gen)
            got = unpack_bits(pack_bits(v, bits), bits, count)
            assert got.dtype == torch.uint8 and torch.equal(got.long(), v), (bits, count)
    w = _pruned(6, 16, "4:8", gen)
    assert torch.equal(unpack(pack(w, "4:8"), "4:8", (6, 16)), w)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(24, 40)
        self.b = nn.Linear(40, 24, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _tiny_artifact(tmp_path, pattern: str, factor_dtype: str):
    torch.manual_seed(0)
    model = _Tiny()
    for name in ("a", "b"):
        lin = model.get_submodule(name)
        gen = torch.Generator().manual_seed(len(name))
        pruned = _pruned(lin.out_features, lin.in_features, pattern, gen)
        factors = gap_factors(lin.weight, pruned, 4)
        lin.weight.data = pruned
        setattr(model, name, GluestickLinear(lin, factors, factor_dtype, pattern, "magnitude"))
    return save_artifact(model, tmp_path / "art", weight_dtype="float16")


@pytest.mark.parametrize("pattern", ["2:4", "unstructured:0.5"])
def test_artifact_loads_straight_into_the_sparse_layout(tmp_path, pattern) -> None:
    folder = _tiny_artifact(tmp_path, pattern, "int8")
    mat = load_artifact(folder, _Tiny, mode="materialize")
    sparse = load_artifact(folder, _Tiny, mode="sparse")
    assert sparse.artifact["mode"] == "sparse" and not sparse.artifact["fallbacks"]
    assert set(sparse.artifact["layer_modes"].values()) == {"sparse"}
    for name in ("a", "b"):
        layer = sparse.get_submodule(name)
        assert isinstance(layer, SparseGluestickLinear) and layer.compiled
        assert not hasattr(layer, "weight") or layer.weight is None
        assert layer.values.dtype == torch.float16  # not widened by the model's fp32 cast
    x = torch.randn(3, 7, 24)
    assert _rel(sparse(x), mat(x)) < 1e-3


def test_bfloat16_artifact_under_auto_keeps_its_stored_dtypes(tmp_path) -> None:
    """A bfloat16 artifact loaded with the default mode: every pruned layer sparse, its values
    kept bfloat16 (read by the kernel as stored, never widened: the resident bytes are the
    stored ones), fp16 factors kept fp16, outputs equal to materialize, at 1 and 16 tokens."""
    torch.manual_seed(0)
    model = _Tiny()
    for name in ("a", "b"):
        lin = model.get_submodule(name)
        gen = torch.Generator().manual_seed(len(name))
        pruned = _pruned(lin.out_features, lin.in_features, "2:4", gen)
        factors = gap_factors(lin.weight, pruned, 4)
        lin.weight.data = pruned
        setattr(model, name, GluestickLinear(lin, factors, "float16", "2:4", "magnitude"))
    folder = save_artifact(model, tmp_path / "art", weight_dtype="bfloat16")
    auto = load_artifact(folder, _Tiny)
    mat = load_artifact(folder, _Tiny, mode="materialize")
    assert set(auto.artifact["layer_modes"].values()) == {"sparse"}
    for name in ("a", "b"):
        layer = auto.get_submodule(name)
        assert layer.values.dtype == torch.bfloat16 and layer.a.dtype == torch.float16
    for tokens in (1, 16):
        x = torch.randn(tokens, 24)
        assert _rel(auto(x), mat(x)) < 1e-3, tokens
    # the README's AMX recipe: the same artifact loaded as a bf16 model (bf16 inputs, so many
    # tokens take the AMX tiles where the CPU has them) keeps the stored dtypes and matches
    # materialize within bf16 rounding
    bf16 = load_artifact(folder, _Tiny, mode="sparse", dtype=torch.bfloat16)
    assert bf16.get_submodule("a").values.dtype == torch.bfloat16
    assert bf16.get_submodule("a").bias.dtype == torch.bfloat16
    for tokens in (1, 16, 40):
        x = torch.randn(tokens, 24)
        got = bf16(x.bfloat16())
        assert got.dtype == torch.bfloat16
        assert _rel(got.float(), mat(x.bfloat16().float())) < 3e-2, tokens


def test_fallback_path_without_the_kernel(tmp_path) -> None:
    """VLA_SPARSE_KERNEL=0 (as on a machine without a compiler): same results, said."""
    folder = _tiny_artifact(tmp_path, "2:4", "float16")
    code = f"""
import torch
from torch import nn
from vla_pruned_ros.compression import load_artifact
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(24, 40)
        self.b = nn.Linear(40, 24, bias=False)
    def forward(self, x):
        return self.b(torch.relu(self.a(x)))
m = load_artifact({str(folder)!r}, _Tiny, mode="sparse")
assert not m.a.compiled and m.artifact["layer_modes"]["a"] == "sparse"
torch.manual_seed(5)
torch.save(m(torch.randn(4, 24)), "out.pt")
"""
    env = {**os.environ, "VLA_SPARSE_KERNEL": "0", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "disabled by VLA_SPARSE_KERNEL=0" in done.stderr
    torch.manual_seed(5)
    x = torch.randn(4, 24)
    mat = load_artifact(folder, _Tiny, mode="materialize")
    assert _rel(torch.load(tmp_path / "out.pt", weights_only=True), mat(x)) < 1e-3


def test_embedded_vla_closed_loop_same_actions_sparse_and_materialize(tmp_path) -> None:
    from vla_pruned_ros.models.registry import load_policy
    from vla_pruned_ros.sim import make_task

    out = tmp_path / "mag24_r8"
    done = subprocess.run(
        [sys.executable, "-m", "vla_pruned_ros.cli.prune", "--method", "magnitude",
         "--pattern", "2:4", "--rank", "8", "--factor-dtype", "float16", "-o", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    policies = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in ("materialize", "sparse"):
            policies[mode] = load_policy(str(out), "nav", mode=mode)
    model = policies["sparse"].model if hasattr(policies["sparse"], "model") else None
    if model is not None and hasattr(model, "artifact"):
        assert "sparse" in model.artifact["layer_modes"].values()
    task = make_task("nav")
    try:
        actions = {}
        for mode, policy in policies.items():
            obs = task.reset(7)
            actions[mode] = []
            for _ in range(12):
                action = policy.predict(obs.image, obs.instruction)
                actions[mode].append(action)
                result = task.step(action)
                obs = result.observation
                if result.done:
                    break
    finally:
        task.close()
    assert len(actions["sparse"]) == len(actions["materialize"])
    np.testing.assert_allclose(
        np.stack(actions["sparse"]), np.stack(actions["materialize"]), atol=2e-3, rtol=1e-3
    )
