"""Structured removal of whole units from a BERT-style encoder (feed-forward channels and
attention heads), scored by VLM-to-VLA adaptation divergence or by the usual baselines.

Units, as the divergence paper defines them:
- an FFN channel j of a layer: row j of `intermediate.dense` (and its bias) and column j of
  `output.dense`;
- an attention head h: its rows of `query`, `key` and `value` (and biases) and its columns of
  `attention.output.dense`. Divergence reads the query and key rows only (the paper's head score);
  removal takes all four.
Removal slices the Linear layers, so the model really has fewer parameters and does less work.
Masking a unit (zeroing its FFN row, or its value rows) gives the same outputs; the tests hold
removal to that.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

MODULES = ("ffn", "heads")
CRITERIA = ("divergence", "magnitude", "wanda", "random")


@dataclass(frozen=True)
class Unit:
    module: str  # "ffn" | "heads"
    layer: int
    index: int


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    """The transformer layers of a BERT-style model (`encoder.layer`)."""
    try:
        return list(encoder.encoder.layer)
    except AttributeError:
        raise ValueError("not a BERT-style encoder: it has no encoder.layer list") from None


def head_size(layer: nn.Module) -> int:
    return layer.attention.self.attention_head_size


def _head_rows(layer: nn.Module, h: int) -> slice:
    d = head_size(layer)
    return slice(h * d, (h + 1) * d)


def num_heads(layer: nn.Module) -> int:
    return layer.attention.self.query.out_features // head_size(layer)


def enumerate_units(encoder: nn.Module) -> list[Unit]:
    units = []
    for i, layer in enumerate(encoder_layers(encoder)):
        units += [Unit("ffn", i, j) for j in range(layer.intermediate.dense.out_features)]
        units += [Unit("heads", i, h) for h in range(num_heads(layer))]
    return units


def _unit_slices(layer: nn.Module, unit: Unit, for_divergence: bool) -> list[torch.Tensor]:
    """The weight pieces that belong to a unit (detached views)."""
    if unit.module == "ffn":
        return [
            layer.intermediate.dense.weight.detach()[unit.index],
            layer.output.dense.weight.detach()[:, unit.index],
        ]
    rows = _head_rows(layer, unit.index)
    att = layer.attention
    pieces = [att.self.query.weight.detach()[rows], att.self.key.weight.detach()[rows]]
    if not for_divergence:
        pieces += [att.self.value.weight.detach()[rows], att.output.dense.weight.detach()[:, rows]]
    return pieces


def divergence_scores(
    vla: nn.Module, base: nn.Module, units: Iterable[Unit], relative: bool = False
) -> dict[Unit, float]:
    """Per unit, the summed L2 norms of (W_vla - W_base) over its pieces; `relative` divides each
    piece by the base piece's norm (how much it changed for its size)."""
    vla_layers, base_layers = encoder_layers(vla), encoder_layers(base)
    if len(vla_layers) != len(base_layers):
        raise ValueError(f"VLA has {len(vla_layers)} layers, base {len(base_layers)}")
    scores = {}
    for unit in units:
        a = _unit_slices(vla_layers[unit.layer], unit, for_divergence=True)
        b = _unit_slices(base_layers[unit.layer], unit, for_divergence=True)
        total = 0.0
        for x, y in zip(a, b, strict=True):
            if x.shape != y.shape:
                raise ValueError(f"{unit}: VLA piece {tuple(x.shape)} vs base {tuple(y.shape)}")
            d = float(torch.linalg.vector_norm((x - y).double()))
            total += d / max(float(torch.linalg.vector_norm(y.double())), 1e-12) if relative else d
        scores[unit] = total
    return scores


def magnitude_scores(model: nn.Module, units: Iterable[Unit]) -> dict[Unit, float]:
    layers = encoder_layers(model)
    return {
        u: sum(float(torch.linalg.vector_norm(p.double())) for p in
               _unit_slices(layers[u.layer], u, for_divergence=False))
        for u in units
    }  # fmt: skip


def wanda_scores(
    model: nn.Module, units: Iterable[Unit], feature_norms: Mapping[str, torch.Tensor]
) -> dict[Unit, float]:
    """Activation-aware unit scores (Wanda's |W| * ||X|| lifted to units): the norm of the
    unit's activation over the calibration tokens times the norm of the weights that read it.
    `feature_norms[name]` are the input-feature norms of `output.dense` (FFN activations) and
    `attention.output.dense` (head contexts) of each layer, by module name relative to `model`."""
    layers = encoder_layers(model)
    prefix = _layer_prefix(model)
    scores = {}
    for u in units:
        layer = layers[u.layer]
        if u.module == "ffn":
            act = feature_norms[f"{prefix}{u.layer}.output.dense"][u.index]
            w = layer.output.dense.weight.detach()[:, u.index]
        else:
            rows = _head_rows(layer, u.index)
            act = feature_norms[f"{prefix}{u.layer}.attention.output.dense"][rows].norm()
            w = layer.attention.output.dense.weight.detach()[:, rows]
        scores[u] = float(act) * float(torch.linalg.vector_norm(w.double()))
    return scores


def _layer_prefix(model: nn.Module) -> str:
    return "encoder.layer."


def wanda_inputs(model: nn.Module) -> list[str]:
    """Module names whose input norms `wanda_scores` needs."""
    n = len(encoder_layers(model))
    return [
        f"encoder.layer.{i}.{m}"
        for i in range(n)
        for m in ("output.dense", "attention.output.dense")
    ]


def random_scores(units: Iterable[Unit], seed: int = 0) -> dict[Unit, float]:
    units = list(units)
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(len(units), generator=g)
    return {u: float(v) for u, v in zip(units, values, strict=True)}


def choose_removal(
    scores: Mapping[Unit, float], module: str, ratio: float, keep: str = "high"
) -> list[Unit]:
    """Units of `module` to remove: a `ratio` of them ranked across layers, taking the lowest
    scores (keep='high') or the highest (keep='low'); every layer keeps at least one unit."""
    if module not in MODULES:
        raise ValueError(f"unknown unit module {module!r}; use one of {MODULES}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"removal ratio must be in [0, 1), got {ratio}")
    if keep not in ("high", "low"):
        raise ValueError(f"keep must be 'high' or 'low', got {keep!r}")
    pool = [u for u in scores if u.module == module]
    count = round(ratio * len(pool))
    ordered = sorted(pool, key=lambda u: (scores[u], u.layer, u.index), reverse=keep == "low")
    per_layer: dict[int, int] = {}
    for u in pool:
        per_layer[u.layer] = per_layer.get(u.layer, 0) + 1
    removed: list[Unit] = []
    for u in ordered:
        if len(removed) == count:
            break
        if per_layer[u.layer] > 1:
            per_layer[u.layer] -= 1
            removed.append(u)
    return removed


def _slice_linear(layer: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    w = layer.weight.detach().index_select(dim, keep)
    out = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None,
                    device=w.device, dtype=w.dtype)  # fmt: skip
    with torch.no_grad():
        out.weight.copy_(w)
        if layer.bias is not None:
            out.bias.copy_(layer.bias.detach() if dim == 1 else layer.bias.detach()[keep])
    return out


def apply_structure(encoder: nn.Module, structure: Mapping[str, Mapping]) -> None:
    """In place: keep only the listed FFN channels and heads of each layer
    (`{"ffn": {"0": [kept...]}, "heads": {"0": [kept...]}}`, as `remove_units` returns)."""
    layers = encoder_layers(encoder)
    for key, kept in structure.get("ffn", {}).items():
        layer = layers[int(key)]
        idx = torch.as_tensor(kept, dtype=torch.long)
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, idx, 0)
        layer.output.dense = _slice_linear(layer.output.dense, idx, 1)
    for key, kept in structure.get("heads", {}).items():
        layer = layers[int(key)]
        rows = torch.cat([torch.arange(h * head_size(layer), (h + 1) * head_size(layer))
                          for h in kept]) if kept else torch.zeros(0, dtype=torch.long)  # fmt: skip
        att = layer.attention
        for name in ("query", "key", "value"):
            setattr(att.self, name, _slice_linear(getattr(att.self, name), rows, 0))
        att.output.dense = _slice_linear(att.output.dense, rows, 1)
        att.self.num_attention_heads = len(kept)
        att.self.all_head_size = len(kept) * head_size(layer)


def remove_units(encoder: nn.Module, units: Iterable[Unit]) -> tuple[nn.Module, dict]:
    """A copy of `encoder` without `units`, and the structure that rebuilds its shapes."""
    removed: dict[tuple[str, int], set[int]] = {}
    for u in units:
        removed.setdefault((u.module, u.layer), set()).add(u.index)
    structure: dict[str, dict[str, list[int]]] = {"ffn": {}, "heads": {}}
    for i, layer in enumerate(encoder_layers(encoder)):
        total = {"ffn": layer.intermediate.dense.out_features, "heads": num_heads(layer)}
        for module in MODULES:
            gone = removed.get((module, i), set())
            if gone:
                structure[module][str(i)] = [j for j in range(total[module]) if j not in gone]
    out = copy.deepcopy(encoder)
    apply_structure(out, structure)
    return out, structure


def count_removed(structure: Mapping[str, Mapping], encoder: nn.Module) -> dict[str, int]:
    """Units removed per module, against the dense encoder."""
    layers = encoder_layers(encoder)
    out = {}
    for module in MODULES:
        gone = 0
        for key, kept in structure.get(module, {}).items():
            layer = layers[int(key)]
            total = layer.intermediate.dense.out_features if module == "ffn" else num_heads(layer)
            gone += total - len(kept)
        out[module] = gone
    return out
