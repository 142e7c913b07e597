"""Connecting a model's action space to a task's or a bag's: `action_map` names the actions a
deployment wants, which of the model's actions feeds each (`order`), and a `scale` per action.

OpenVLA answers in 7-D end-effector deltas (x, y, z, roll, pitch, yaw, gripper); our navigation
task and its bags want a base twist (linear_x, angular_z). Nothing can guess how one maps onto
the other, so the tools refuse a mismatch with both spaces named (`check_action_space`), and
the user writes the map once in the adapter options:

    action_map: {names: [linear_x, angular_z], order: [x, yaw], scale: [0.5, 1.0]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vla_pruned_ros.models.base import PolicyAdapter, PolicyInfo


@dataclass(frozen=True)
class ActionMap:
    """Target action i = scale[i] * source action index[i]."""

    names: tuple[str, ...]
    index: tuple[int, ...]
    scale: tuple[float, ...]
    action_space: str


def parse_action_map(
    spec: Mapping[str, Any], source: PolicyInfo, action_space: str = ""
) -> ActionMap:
    """An `action_map` option against the model's own action names. `order` lists, per target
    name, the source action's name or index (default: the first len(names) in order); `scale` is
    one number or one per name (default 1)."""
    if not isinstance(spec, Mapping) or "names" not in spec:
        raise ValueError(
            f"action_map must be a mapping with 'names' (and 'order', 'scale'), not {spec!r}"
        )
    names = tuple(str(n) for n in spec["names"])
    order: Sequence[Any] = spec.get("order", list(range(len(names))))
    if len(order) != len(names):
        raise ValueError(f"action_map: {len(names)} names but {len(order)} entries in order")
    index = []
    for item in order:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < len(source.action_names):
                known = list(source.action_names)
                raise ValueError(f"action_map: index {item} outside the model's actions {known}")
            index.append(item)
        elif str(item) in source.action_names:
            index.append(source.action_names.index(str(item)))
        else:
            raise ValueError(f"action_map: {item!r} is not one of the model's actions "
                             f"{list(source.action_names)}")  # fmt: skip
    scale = spec.get("scale", 1.0)
    scales = (
        [float(scale)] * len(names) if isinstance(scale, int | float) else [float(s) for s in scale]
    )
    if len(scales) != len(names):
        raise ValueError(f"action_map: {len(names)} names but {len(scales)} scales")
    space = str(spec.get("action_space", action_space or "mapped"))
    return ActionMap(names, tuple(index), tuple(scales), space)


class MappedPolicy:
    """A policy whose actions go through an ActionMap: same model, the deployment's names."""

    def __init__(self, policy: PolicyAdapter, amap: ActionMap) -> None:
        self.policy, self.map = policy, amap
        self._index = np.asarray(amap.index)
        self._scale = np.asarray(amap.scale, np.float32)
        src = policy.info
        lo = np.asarray(src.action_low, np.float32)[self._index] * self._scale
        hi = np.asarray(src.action_high, np.float32)[self._index] * self._scale
        self.info = replace(src, action_space=amap.action_space, action_names=amap.names,
                            action_low=tuple(np.minimum(lo, hi).tolist()),
                            action_high=tuple(np.maximum(lo, hi).tolist()))  # fmt: skip

    def predict(self, image: np.ndarray, instruction: str) -> np.ndarray:
        action = np.asarray(self.policy.predict(image, instruction), np.float32).reshape(-1)
        return (action[self._index] * self._scale).astype(np.float32)


def apply_action_map(policy: PolicyAdapter, spec: Mapping[str, Any] | None,
                     action_space: str = "") -> PolicyAdapter:  # fmt: skip
    """`policy` itself when there is no map, else its actions mapped."""
    if not spec:
        return policy
    return MappedPolicy(policy, parse_action_map(spec, policy.info, action_space))


def suggest_action_map(source: Sequence[str], want: Sequence[str]) -> dict[str, Any]:
    """An `action_map` that `parse_action_map` accepts, one entry per wanted name: a name both
    spaces share maps onto itself, the others take the model's remaining actions in order, and
    a wanted action left with none (a model with fewer actions) reads action 0 at scale 0, i.e.
    stays zero. A starting point the user edits, never a guess that would fail to parse."""
    free = [n for n in source if n not in want]
    order: list[str] = []
    scale: list[float] = []
    for name in want:
        if name in source:
            order.append(name)
        elif free:
            order.append(free.pop(0))
        else:
            order.append(source[0])
            scale.append(0.0)
            continue
        scale.append(1.0)
    return {"names": list(want), "order": order, "scale": scale}


def check_action_space(info: PolicyInfo, want_names: Sequence[str], want_space: str,
                       where: str) -> None:  # fmt: skip
    """Refuse a model whose actions are not the ones `where` (a task, a bag) expects, naming
    both spaces and the option that connects them (with a map that would parse)."""
    if tuple(info.action_names) == tuple(want_names):
        return
    example = suggest_action_map(tuple(info.action_names), tuple(want_names))
    raise ValueError(
        f"{info.model_id} acts in {info.action_space} {list(info.action_names)}, but {where} "
        f"expects {want_space} {list(want_names)}; connect them with the adapter option "
        f"action_map, e.g. action_map: {example}"
    )
