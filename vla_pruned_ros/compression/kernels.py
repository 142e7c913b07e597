"""The compiled CPU kernel for pruned linear layers (`csrc/sparse_linear.cpp`), built on first
use against the installed torch into `build/torch_extensions/` of the repository (or
`$VLA_KERNEL_CACHE`), once per machine kind.

Where it cannot be built (no C++ compiler, no ninja, a failing build) `kernel()` returns None and
`kernel_unavailable_reason()` says why in one line; the sparse runtime then runs the pure-PyTorch
packed path. `VLA_SPARSE_KERNEL=0` disables it on purpose (to test that fallback).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from vla_pruned_ros.cpuinfo import cpuinfo_field

SOURCE = Path(__file__).parent / "csrc" / "sparse_linear.cpp"
_X86_FLAGS = ("avx2", "fma", "f16c")
_state: dict[str, object] = {}


def _cpu_flags() -> set[str]:
    return set((cpuinfo_field("flags") or "").split())


def openmp_flags() -> list[str]:
    """-fopenmp (compiling and linking) where torch runs its threads on OpenMP (its Linux
    wheels; the process then shares torch's libgomp): ATen's parallel_for, which spreads the
    kernel's rows over threads, is an inline OpenMP region, so without the flag every call ran
    on one thread whatever torch's thread count (until 2026-12-02)."""
    return ["-fopenmp"] if torch.backends.openmp.is_available() else []


def compile_flags() -> list[str]:
    """-O3 and OpenMP, plus AVX2/FMA/F16C where this x86 CPU has all three (runtime check at
    build time); elsewhere (aarch64, older x86) the portable scalar path only. The AVX-512 2:4
    dot is compiled for its own target and chosen at run time (the kernel's `simd()`).
    `VLA_SPARSE_KERNEL_PORTABLE=1` builds the portable path on x86 too: the flags an aarch64
    build gets, so the same `#if` leaves the SIMD code out (how that path is tested where no
    ARM compiler exists)."""
    flags = ["-O3", *openmp_flags()]
    portable = os.environ.get("VLA_SPARSE_KERNEL_PORTABLE", "0") == "1"
    if (
        not portable
        and platform.machine() in ("x86_64", "AMD64")
        and set(_X86_FLAGS) <= _cpu_flags()
    ):
        flags += ["-mavx2", "-mfma", "-mf16c"]
    return flags


def cache_dir() -> Path:
    """One folder per (source, torch version, machine, flags): a rebuild only when one changes."""
    flags = compile_flags()
    key = hashlib.sha256(
        SOURCE.read_bytes() + f"{torch.__version__}|{platform.machine()}|{flags}".encode()
    ).hexdigest()[:12]
    root = os.environ.get("VLA_KERNEL_CACHE") or Path(__file__).resolve().parents[2] / "build"
    return Path(root) / "torch_extensions" / f"sparse_linear_{key}"


STALE_LOCK_S = 1200.0


def _drop_stale_lock(lock: Path) -> None:
    """torch's build lock outlives a build that was killed (a test timeout, Ctrl-C), and every
    later load then waits on it forever. A lock older than any build (20 min) is removed."""
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
            warnings.warn(f"removed a stale sparse-kernel build lock {lock}", stacklevel=3)
    except FileNotFoundError:
        pass


def _built(folder: Path) -> ModuleType | None:
    """The extension already built in `folder` (its name is keyed by the source, torch, machine
    and flags, so nothing there can be stale), imported directly: `cpp_extension.load` would
    import setuptools and run ninja's up-to-date check first, ~0.1 s of every start-up. None
    when it is not there, a build holds the lock, or it does not import."""
    import importlib.machinery
    import importlib.util

    library = folder / "vla_sparse_linear.so"
    if not library.is_file() or (folder / "lock").exists():
        return None
    try:
        loader = importlib.machinery.ExtensionFileLoader("vla_sparse_linear", str(library))
        spec = importlib.util.spec_from_file_location("vla_sparse_linear", library, loader=loader)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        loader.exec_module(module)
        return module
    except ImportError:  # a half-written library: rebuild it the usual way
        return None


def _build() -> ModuleType | None:
    if os.environ.get("VLA_SPARSE_KERNEL", "1") == "0":
        _state["reason"] = "disabled by VLA_SPARSE_KERNEL=0"
        return None
    ready = _built(cache_dir())
    if ready is not None:
        return ready
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        _state["reason"] = "no C++ compiler found (install g++ to build the sparse kernel)"
        return None
    if shutil.which("ninja") is None:
        try:
            import ninja  # noqa: F401
        except ImportError:
            _state["reason"] = "ninja not found (apt-get install ninja-build or pip install ninja)"
            return None
    from torch.utils.cpp_extension import load

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _drop_stale_lock(folder / "lock")
    try:
        return load(
            name="vla_sparse_linear",
            sources=[str(SOURCE)],
            extra_cflags=compile_flags(),
            extra_ldflags=openmp_flags(),
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as err:  # a compiler error must not stop a robot from loading its model
        line = " ".join(str(err).split())[:200]
        _state["reason"] = f"building the sparse kernel failed: {line}"
        return None


def kernel() -> ModuleType | None:
    """The compiled extension (built and cached on first call), or None with a reason."""
    if "module" not in _state:
        _state["module"] = _build()
        if _state["module"] is None:
            warnings.warn(
                f"sparse kernel unavailable, pure-PyTorch path used: {_state['reason']}",
                stacklevel=2,
            )
    return _state["module"]  # type: ignore[return-value]


def kernel_unavailable_reason() -> str | None:
    """Why `kernel()` is None, or None when it is available."""
    return None if kernel() is not None else str(_state.get("reason"))


def kernel_build() -> str:
    """What a pruned layer runs on here, as a cached result's key records it: the compiled
    kernel's build (its cache folder names the source, torch, machine and flags) with the SIMD
    paths it takes on this CPU (`avx512` where the CPU has it, else `avx2` or `portable`; then
    `+amx` where bf16 layers run many tokens on AMX tiles), or the pure-PyTorch path with the
    reason. Sums in another order flip single closed-loop episodes, so a cell run on one must
    not be reused for the other."""
    module = kernel()
    if module is None:
        return f"pure-pytorch ({_state.get('reason')})"
    return f"{cache_dir().name}+{module.simd()}" + ("+amx" if module.use_tiles() else "")
