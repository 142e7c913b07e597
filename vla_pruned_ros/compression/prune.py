"""Pruning a model's linear layers, and GLUESTICK on top (fixed names: `prune`, `gluestick`).

Both return modified copies and never touch their inputs. Pruned layers become GluestickLinear
modules (rank 0) that remember their pattern and method, so `gluestick` finds them by type and
corrects each from the dense layer of the same name.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from vla_pruned_ros.compression.calibration import collect_input_stats
from vla_pruned_ros.compression.gluestick import (
    CORRECTIONS,
    DEFAULT_DAMP,
    GluestickConv2d,
    GluestickLinear,
    gap_matrix,
    input_basis,
    layer_factors,
)
from vla_pruned_ros.compression.patterns import Pattern, parse_pattern, prune_mask
from vla_pruned_ros.compression.rank_policy import (
    ActivationBudgetRank,
    LayerSpectrum,
    RankPolicy,
    parse_rank_policy,
)
from vla_pruned_ros.compression.sparsegpt import sparsegpt_weight

METHODS = ("magnitude", "wanda", "sparsegpt")
NEEDS_CALIBRATION = ("wanda", "sparsegpt")


def _prunable(module: nn.Module, conv: bool) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return conv and isinstance(module, nn.Conv2d) and module.groups == 1


OUTPUT_HEADS = ("lm_head", "*.lm_head")  # kept dense by default (select_linear)


def select_linear(
    model: nn.Module,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    conv: bool = False,
) -> list[str]:
    """Names of the nn.Linear (and, with `conv`, groups=1 nn.Conv2d) layers that the
    include/exclude fnmatch globs select. Output heads named like `lm_head` (`OUTPUT_HEADS`)
    are kept dense unless an include glob names them: Wanda's, SparseGPT's and GLUESTICK's
    authors never prune the head (issue 19 measured 6-11x the KL to dense on a tiny Llama)."""
    include, exclude = list(include or []), list(exclude or [])
    names = []
    for name, module in model.named_modules():
        if not _prunable(module, conv):
            continue
        if include and not any(fnmatch.fnmatch(name, g) for g in include):
            continue
        if not include and any(fnmatch.fnmatch(name, g) for g in OUTPUT_HEADS):
            continue
        if exclude and any(fnmatch.fnmatch(name, g) for g in exclude):
            continue
        names.append(name)
    return names


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _masked(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # torch.where, not a multiply: pruned entries must be +0.0 (w * 0 gives -0.0 for w < 0).
    return torch.where(keep, weight, torch.zeros_like(weight))


def pruned_weight(
    weight: torch.Tensor, method: str, pattern: Pattern, stats=None, damp: float = 0.01
) -> torch.Tensor:
    """One layer's pruned weight. Wanda scores |W_ij| * ||X_j||_2 and compares within each
    output row; magnitude compares |W| over the whole layer (unstructured) or per group (N:M)."""
    w = weight.detach()
    if method == "magnitude":
        return _masked(w, prune_mask(w.abs(), pattern))
    if method == "wanda":
        flat = w.reshape(w.shape[0], -1)
        scores = flat.abs().double() * stats.feature_norms().unsqueeze(0)
        return _masked(w, prune_mask(scores, pattern, per_row=True).reshape(w.shape))
    if method == "sparsegpt":
        return sparsegpt_weight(w, stats.hessian(), pattern, damp=damp)
    raise ValueError(f"unknown pruning method {method!r}; available: {METHODS}")


def prune(
    model: nn.Module,
    method: str,
    pattern: str | float | Pattern,
    calib=None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    progress: bool = False,
    damp: float = 0.01,
    conv: bool = False,
) -> nn.Module:
    """A copy of `model` whose selected nn.Linear layers are pruned to `pattern` by `method`.

    `calib` is any iterable of model inputs (dicts are passed as keywords, tuples positionally);
    Wanda and SparseGPT need it, magnitude ignores it. `conv` also prunes groups=1 Conv2d
    layers, as the (out, in*kh*kw) matrices they multiply with.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; available: {METHODS}")
    pattern = parse_pattern(pattern)
    names = select_linear(model, include, exclude, conv)
    if not names:
        raise ValueError(f"no linear layer matches include={include} exclude={exclude}")
    if pattern.kind == "nm":
        bad = [
            f"{n} (d_in={model.get_submodule(n).weight[0].numel()})"
            for n in names
            if model.get_submodule(n).weight[0].numel() % pattern.m
        ]
        if bad:
            raise ValueError(
                f"{pattern} needs input dimensions that are multiples of {pattern.m}; "
                f"exclude these layers: {', '.join(bad[:5])}"
            )
    stats = {}
    if method in NEEDS_CALIBRATION:
        if calib is None:
            raise ValueError(f"{method} needs calibration data: pass calib=<iterable of inputs>")
        was_training = model.training
        model.eval()
        try:
            stats = collect_input_stats(
                model, names, calib, with_hessian=method == "sparsegpt", progress=progress
            )
        finally:
            model.train(was_training)
    from tqdm.auto import tqdm

    pruned = copy.deepcopy(model)
    for name in tqdm(names, desc=f"{method} {pattern}", unit="layer", disable=not progress):
        layer = pruned.get_submodule(name)
        with torch.no_grad():
            layer.weight.copy_(pruned_weight(layer.weight, method, pattern, stats.get(name), damp))
        cls = GluestickConv2d if isinstance(layer, nn.Conv2d) else GluestickLinear
        replace_module(pruned, name, cls(layer, pattern=str(pattern), method=method))
    return pruned


def compressed_layers(model: nn.Module) -> dict[str, GluestickLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, GluestickLinear)}


def gluestick(
    dense: nn.Module,
    pruned: nn.Module,
    rank: int | str | RankPolicy,
    svd: str = "exact",
    factor_dtype: str = "float32",
    oversample: int = 10,
    power_iters: int = 2,
    progress: bool = False,
    correction: str = "svd",
    calib=None,
    stats: dict | None = None,
    damp: float = DEFAULT_DAMP,
    calib_source: str = "",
) -> nn.Module:
    """A copy of `pruned` whose pruned layers carry a rank-r correction of their gap to the dense
    layer of the same name. `rank` is an int (the paper's one global rank) or a policy
    (`EnergyRank`, `BudgetRank`, `ActivationBudgetRank`, or their string forms 'energy:0.9',
    'budget:5', 'activation-budget:5').

    `correction="svd"` is the paper's (weight error); `"activation"` minimises each layer's
    output error on calibration inputs: `calib` (model inputs, run once through the dense
    model, as Wanda's statistics are) or `stats` ({layer: InputStats with X^T X}, e.g. from
    inputs that already went through compressed layers). The copy's `correction` attribute
    records the choice, its damping and calibration source (`calib_source`) for the manifest.
    """
    from tqdm.auto import tqdm

    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {CORRECTIONS}")
    policy = parse_rank_policy(rank)
    if isinstance(policy, ActivationBudgetRank) and correction != "activation":
        raise ValueError(f"{policy} ranks by output error: use correction='activation'")
    layers = compressed_layers(pruned)
    if not layers:
        raise ValueError("the pruned model has no pruned layers: run prune() on it first")
    dense_layers = {}
    for name, layer in layers.items():
        try:
            d = dense.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"the dense model has no layer {name!r} to take the gap from"
            ) from None
        if tuple(d.weight.shape) != tuple(layer.weight.shape):
            raise ValueError(
                f"layer {name}: dense {tuple(d.weight.shape)} vs pruned "
                f"{tuple(layer.weight.shape)}; was the pruned model made from this dense one?"
            )
        dense_layers[name] = d
    bases = {}
    if correction == "activation":
        stats = _activation_stats(dense, list(layers), calib, stats, progress)
        bases = {n: input_basis(stats[n].xtx, damp) for n in layers}
    if hasattr(policy, "rank"):
        ranks = policy.choose(
            {
                n: LayerSpectrum(
                    torch.zeros(min(m.out_features, m.in_features)), m.out_features, m.in_features
                )
                for n, m in layers.items()
            },
            factor_dtype,
        )
    else:  # energy and budget policies read every layer's spectrum first
        spectra = {}
        for n, m in tqdm(layers.items(), desc="spectra", unit="layer", disable=not progress):
            gap = gap_matrix(dense_layers[n].weight, m.weight)
            if isinstance(policy, ActivationBudgetRank):
                w = dense_layers[n].weight.detach().double().reshape(gap.shape)
                scale = float(torch.linalg.matrix_norm(bases[n].weigh(w))) or 1.0
                values = torch.linalg.svdvals(bases[n].weigh(gap)) / scale
            else:
                values = torch.linalg.svdvals(gap)
            spectra[n] = LayerSpectrum(values, m.out_features, m.in_features)
        ranks = policy.choose(spectra, factor_dtype)
    corrected = copy.deepcopy(pruned)
    for name, layer in tqdm(
        compressed_layers(corrected).items(),
        desc=f"gluestick {policy} {correction}",
        unit="layer",
        disable=not progress,
    ):
        options = dict(svd=svd, oversample=oversample, power_iters=power_iters)
        if correction == "activation":
            options.update(xtx=stats[name].xtx, basis=bases[name])
        factors = layer_factors(
            dense_layers[name].weight, layer.weight, ranks[name], correction, damp=damp, **options
        )
        replace_module(corrected, name, type(layer)(layer, factors, factor_dtype))
    corrected.rank_policy = str(policy)
    counts = sorted({s.count for s in (stats or {}).values()})
    corrected.correction = correction_record(
        correction, damp, calib_source, counts[0] if len(counts) == 1 else counts
    )
    return corrected


def correction_record(
    correction: str, damp: float, calib_source: str = "", tokens: int | list | None = None
) -> dict:
    """What an artifact's manifest says about its correction (the one place its keys are
    named): the method, and for `activation` the damping rule and calibration source."""
    if correction == "svd":
        return {"correction": "svd"}
    return {
        "correction": "activation",
        "damping": f"{damp:g} * mean(diag(X^T X)) added to the diagonal (1.0 if all inputs "
        "are zero)",
        "damp": damp,
        "calibration": calib_source or "calibration inputs given to gluestick()",
        "calibration_tokens": tokens,
    }


def _activation_stats(dense, names, calib, stats, progress) -> dict:
    if stats is None:
        if calib is None:
            raise ValueError(
                "correction='activation' needs calibration data: pass calib=<iterable of "
                "inputs> or stats=<{layer: InputStats}>"
            )
        was_training = dense.training
        dense.eval()
        try:
            stats = collect_input_stats(dense, names, calib, with_hessian=True, progress=progress)
        finally:
            dense.train(was_training)
    missing = [n for n in names if n not in stats or stats[n].xtx is None]
    if missing:
        raise ValueError(f"no X^T X for {len(missing)} layers (e.g. {missing[:3]}): collect "
                         "them with with_hessian=True")  # fmt: skip
    return stats
