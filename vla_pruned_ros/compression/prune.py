"""Pruning a model's linear layers, and GLUESTICK on top (fixed names: `prune`, `gluestick`).

Both return modified copies and never touch their inputs. Pruned layers become GluestickLinear
modules (rank 0), so `gluestick` finds them by type and corrects each from the dense layer of the
same name.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from vla_pruned_ros.compression.gluestick import GluestickLinear, gap_factors
from vla_pruned_ros.compression.patterns import parse_pattern, prune_mask

METHODS = ("magnitude",)


def _selected(name: str, include: Iterable[str] | None, exclude: Iterable[str] | None) -> bool:
    if include and not any(fnmatch.fnmatch(name, g) for g in include):
        return False
    return not (exclude and any(fnmatch.fnmatch(name, g) for g in exclude))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def prune(
    model: nn.Module,
    method: str,
    pattern: str | float,
    calib=None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> nn.Module:
    """A copy of `model` whose selected nn.Linear layers (fnmatch globs on module names) are
    pruned to `pattern` by `method`."""
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; available here: {METHODS}")
    pattern = parse_pattern(pattern)
    pruned = copy.deepcopy(model)
    names = [
        n
        for n, m in pruned.named_modules()
        if isinstance(m, nn.Linear) and _selected(n, include, exclude)
    ]
    if not names:
        raise ValueError(f"no linear layer matches include={include} exclude={exclude}")
    for name in names:
        layer = pruned.get_submodule(name)
        try:
            keep = prune_mask(layer.weight.detach().abs(), pattern)
        except ValueError as err:
            raise ValueError(f"layer {name}: {err}") from None
        with torch.no_grad():
            layer.weight.mul_(keep)
        _replace(pruned, name, GluestickLinear(layer))
    return pruned


def gluestick(dense: nn.Module, pruned: nn.Module, rank: int) -> nn.Module:
    """A copy of `pruned` whose pruned layers carry the rank-`rank` correction of their gap to
    the dense layer of the same name."""
    corrected = copy.deepcopy(pruned)
    for name, module in list(corrected.named_modules()):
        if isinstance(module, GluestickLinear):
            dense_layer = dense.get_submodule(name)
            pruned_layer = nn.Linear(
                module.in_features, module.out_features, module.bias is not None
            )
            pruned_layer.weight = module.weight
            pruned_layer.bias = module.bias
            factors = gap_factors(dense_layer.weight, module.weight, rank)
            _replace(corrected, name, GluestickLinear(pruned_layer, factors))
    return corrected
