"""How many singular triplets each layer keeps.

The paper uses one global rank (`FixedRank`). Beyond it: `EnergyRank` keeps, in every layer, the
smallest rank holding a fraction of that layer's gap energy, and `BudgetRank` spends a total
memory budget where it buys the most energy: triplets are taken greedily, across all layers, in
order of squared singular value per byte they cost (r (d_out + d_in) values each).

`ActivationBudgetRank` spends the budget by the same greedy rule on what each extra rank removes
from the layer's output error on calibration inputs (the activation-weighted singular values of
`gluestick.activation_factors`), relative to that layer's dense output energy, so a rank goes
where the robot's inputs feel it rather than where the weight gap is large ("gap energy is not
importance"). It pairs with `correction="activation"`.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass

import torch

from vla_pruned_ros.compression.spectrum import rank_for_energy

FACTOR_BYTES = {"float32": 4, "float16": 2, "int8": 1}


@dataclass(frozen=True)
class LayerSpectrum:
    singular_values: torch.Tensor  # descending
    d_out: int
    d_in: int


@dataclass(frozen=True)
class FixedRank:
    rank: int

    def choose(self, spectra: dict[str, LayerSpectrum], factor_dtype: str) -> dict[str, int]:
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0, got {self.rank}")
        return {n: min(self.rank, s.singular_values.numel()) for n, s in spectra.items()}

    def __str__(self) -> str:
        return f"rank:{self.rank}"


@dataclass(frozen=True)
class EnergyRank:
    fraction: float

    def choose(self, spectra: dict[str, LayerSpectrum], factor_dtype: str) -> dict[str, int]:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"energy fraction must be in [0, 1], got {self.fraction}")
        return {n: rank_for_energy(s.singular_values, self.fraction) for n, s in spectra.items()}

    def __str__(self) -> str:
        return f"energy:{self.fraction:g}"


@dataclass(frozen=True)
class BudgetRank:
    megabytes: float

    def choose(self, spectra: dict[str, LayerSpectrum], factor_dtype: str) -> dict[str, int]:
        return spend_budget(spectra, self.megabytes, factor_dtype)

    def __str__(self) -> str:
        return f"budget:{self.megabytes:g}MB"


@dataclass(frozen=True)
class ActivationBudgetRank:
    """A total factor budget in MB, spent by activation-weighted output error removed per byte.
    `choose` expects each layer's activation-weighted singular values, divided by the norm of
    the layer's dense output on the calibration inputs (`gluestick()` builds them)."""

    megabytes: float

    def choose(self, spectra: dict[str, LayerSpectrum], factor_dtype: str) -> dict[str, int]:
        return spend_budget(spectra, self.megabytes, factor_dtype)

    def __str__(self) -> str:
        return f"activation-budget:{self.megabytes:g}MB"


def spend_budget(
    spectra: dict[str, LayerSpectrum], megabytes: float, factor_dtype: str
) -> dict[str, int]:
    """Ranks buying the most squared singular value per byte within `megabytes` (greedy across
    layers; exact for descending spectra, since each layer's next triplet is never better
    than its previous one)."""
    if megabytes < 0:
        raise ValueError(f"memory budget must be >= 0 MB, got {megabytes}")
    budget = megabytes * 1e6
    per_value = FACTOR_BYTES[factor_dtype]
    ranks = dict.fromkeys(spectra, 0)
    heap = []
    for name, s in spectra.items():
        if s.singular_values.numel():
            cost = (s.d_out + s.d_in) * per_value
            heap.append((-(float(s.singular_values[0]) ** 2) / cost, name, cost))
    heapq.heapify(heap)
    spent = 0.0
    while heap:
        _, name, cost = heapq.heappop(heap)
        if spent + cost > budget:
            continue  # this layer's triplets cost too much now; cheaper layers may still fit
        spent += cost
        ranks[name] += 1
        values = spectra[name].singular_values
        if ranks[name] < values.numel():
            heapq.heappush(heap, (-(float(values[ranks[name]]) ** 2) / cost, name, cost))
    return ranks


RankPolicy = FixedRank | EnergyRank | BudgetRank | ActivationBudgetRank


def parse_rank_policy(spec: int | str | RankPolicy) -> RankPolicy:
    """`64`, `"rank:64"`, `"energy:0.9"`, `"budget:5MB"` or `"activation-budget:5MB"` (the one
    parser of rank policies)."""
    if isinstance(spec, (FixedRank, EnergyRank, BudgetRank, ActivationBudgetRank)):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        return FixedRank(spec)
    text = str(spec).strip().lower()
    m = re.fullmatch(r"(?:rank:)?(\d+)", text)
    if m:
        return FixedRank(int(m.group(1)))
    m = re.fullmatch(r"energy:([0-9.]+)", text)
    if m:
        return EnergyRank(float(m.group(1)))
    m = re.fullmatch(r"(activation-)?budget:([0-9.]+)\s*(mb)?", text)
    if m:
        return (ActivationBudgetRank if m.group(1) else BudgetRank)(float(m.group(2)))
    raise ValueError(
        f"bad rank policy {spec!r}: use an integer rank, 'energy:F' (0..1), 'budget:N' (MB) or "
        "'activation-budget:N' (MB)"
    )
