"""What a results file records about the machine it ran on: the one place for it.

Closed-loop episodes are chaotic: a different float summation order (another CPU model, another
vector ISA that torch dispatches to) flips single outcomes and changes most trajectories, with
the same code and seeds. Rows are comparable episode by episode only when they ran on the same
kind of machine, so a table names it."""

from __future__ import annotations

import os
import platform
from typing import Any

from vla_pruned_ros.cpuinfo import cpuinfo_field


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string elsewhere."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU count, CPU model, the vector ISA torch runs its CPU kernels with, Python and torch."""
    import torch

    return {"cpus": os.cpu_count(), "cpu": cpu_model(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip


def machine_words(record: dict[str, Any]) -> str:
    """A results file's machine in words, for its page ("2 CPUs, AMD EPYC, torch AVX512");
    older files recorded the CPU count only."""
    words = [f"{record.get('cpus')} CPUs"]
    if record.get("cpu"):
        words.append(str(record["cpu"]))
    if record.get("torch_cpu_capability"):
        words.append(f"torch {record['torch_cpu_capability']}")
    return ", ".join(words)
