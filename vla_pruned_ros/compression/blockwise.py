"""Wanda and SparseGPT on a model too big to load twice: block by block, as the authors' code
does (torch only; `models/hf_sequential.py` finds a checkpoint's blocks and calibration inputs).

The inputs of the first block are caught for every calibration sample (`catch_inputs`); then
each block in turn is filled from the checkpoint, its linear layers' input statistics are
gathered on those inputs, the layers are pruned (and corrected) and written through the one
artifact writer, the block is run again compressed to give the next block its inputs, and it is
freed (`compress_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.artifact_write import ArtifactWriter
from vla_pruned_ros.compression.calibration import InputStats
from vla_pruned_ros.compression.gluestick import corrected_weight, layer_factors
from vla_pruned_ros.compression.patterns import Pattern
from vla_pruned_ros.compression.prune import pruned_weight
from vla_pruned_ros.compression.streaming import compress_layer

Inputs = list[tuple[tuple, dict]]


class _Caught(Exception):
    pass


def catch_inputs(
    blocks: nn.ModuleList,
    samples: Sequence[Any],
    run: Callable[[Any], object],
) -> Inputs:
    """The (args, kwargs) the first block receives for each sample, when `run(sample)` calls the
    model: the first block is swapped for a catcher that records its inputs and stops the
    forward there (nothing after it runs)."""
    caught: Inputs = []
    first = blocks[0]

    class Catcher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = first

        def forward(self, *args, **kwargs):
            caught.append((args, kwargs))
            raise _Caught

    blocks[0] = Catcher()
    try:
        with torch.no_grad():
            for sample in samples:
                try:
                    run(sample)
                except _Caught:
                    pass
    finally:
        blocks[0] = first
    return caught


def tensor_of(model: nn.Module, key: str) -> torch.Tensor:
    module_name, _, leaf = key.rpartition(".")
    return getattr(model.get_submodule(module_name) if module_name else model, leaf).detach()


def write_tensors(
    model: nn.Module, keys: Iterable[str], writer: ArtifactWriter, target: torch.dtype | None
) -> None:
    """The model's current tensors `keys` as plain weights (floats stored as `target`)."""
    for k in keys:
        t = tensor_of(model, k)
        writer.add("weights", k, t.to(target) if target and t.is_floating_point() else t)


def compress_blocks(
    model: nn.Module,
    prefix: str,
    blocks: nn.ModuleList,
    inputs: Inputs,
    chosen: Collection[str],
    keys: Collection[str],
    fill: Callable[[list[str]], None],
    writer: ArtifactWriter,
    method: str,
    pattern: Pattern,
    rank: int,
    *,
    svd: str = "randomized",
    factor_dtype: str = "float16",
    target: torch.dtype | None = torch.float16,
    correction: str = "svd",
    damp: float = 0.01,
    progress: bool = True,
) -> int:
    """Prune (and correct) the `chosen` linear layers of every block `prefix.i`, writing each
    block (its layers packed, its other tensors as weights) before the next is filled by
    `fill(keys of the block)`; returns the calibration token count. With
    `correction="activation"` each layer's factors minimise its output error on the inputs it
    gets from the already-compressed blocks before it (pruned + corrected, factors as stored),
    and those compressed outputs feed the next block; with "svd" the next block sees the
    pruned outputs, as the pruning authors' code does. `keys` are every tensor the source
    holds, by the model's names (a layer has a bias when `<layer>.bias` is among them)."""
    from tqdm import tqdm

    tokens = 0
    for i in tqdm(range(len(blocks)), desc=f"{method} {pattern} block", disable=not progress):
        block_prefix = f"{prefix}.{i}."
        block = blocks[i]
        own = sorted(k for k in keys if k.startswith(block_prefix))
        fill(own)
        names = sorted(n for n in chosen if n.startswith(block_prefix))
        stats, hooks = {}, []
        for n in names:
            layer = model.get_submodule(n)
            xtx = method == "sparsegpt" or correction == "activation"
            stats[n] = InputStats(layer.in_features, xtx)
            hooks.append(layer.register_forward_hook(
                lambda _m, inp, _o, s=stats[n]: s.add(inp[0])))  # fmt: skip
        with torch.no_grad():
            for args, kwargs in inputs:
                block(*args, **kwargs)
        for h in hooks:
            h.remove()
        tokens = max((s.count for s in stats.values()), default=tokens)
        for n in names:
            layer = model.get_submodule(n)
            dense = layer.weight.detach().clone()
            pruned = pruned_weight(dense, method, pattern, stats[n])
            factors = None
            if rank and correction != "svd":
                stored = (pruned.to(target) if target is not None else pruned).float()
                factors = layer_factors(dense.float(), stored, rank, correction,
                                        stats[n].xtx, damp, svd=svd)  # fmt: skip
            compress_layer(writer, n, dense, pruned, pattern, rank, svd, factor_dtype, target,
                           method, f"{n}.bias" in keys, factors)  # fmt: skip
            if factors is not None:  # the next block sees the compressed block's output
                pruned = corrected_weight(pruned, factors, factor_dtype)
            with torch.no_grad():
                layer.weight.copy_(pruned)
        with torch.no_grad():
            new = []
            for args, kwargs in inputs:
                result = block(*args, **kwargs)
                hidden = result[0] if isinstance(result, tuple) else result
                new.append(((hidden, *args[1:]), kwargs))
            inputs = new
        done = set(names)
        for k in own:
            name = k.rsplit(".", 1)[0]
            if name in done and k.endswith(".weight"):
                continue
            t = tensor_of(model, k)
            if name in done and k.endswith(".bias"):
                writer.add("pruned", k, t.to(target) if target else t)
            else:
                writer.add("weights", k, t.to(target) if target and t.is_floating_point() else t)
        blocks[i] = block.to("meta")
    return tokens


def sample_inputs(sample: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A calibration sample as forward keywords: token ids (1 x T) or the keywords themselves."""
    return dict(sample) if isinstance(sample, Mapping) else {"input_ids": sample}
