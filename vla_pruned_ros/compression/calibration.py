"""Input statistics of linear layers, gathered with forward hooks over calibration batches.

Wanda needs each input feature's L2 norm over all calibration tokens; SparseGPT needs the layer
Hessian H = 2 X^T X / n. Both come from one pass of the dense model (one-shot, not the sequential
block-by-block pass of the LLM papers, so it works on any module tree).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class InputStats:
    d_in: int
    with_hessian: bool = False
    count: int = 0
    sq_sum: torch.Tensor = field(init=False)
    xtx: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.sq_sum = torch.zeros(self.d_in, dtype=torch.float64)
        if self.with_hessian:
            self.xtx = torch.zeros(self.d_in, self.d_in, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.d_in).to(torch.float64).cpu()
        self.count += x.shape[0]
        self.sq_sum += x.square().sum(0)
        if self.xtx is not None:
            self.xtx += x.T @ x

    def feature_norms(self) -> torch.Tensor:
        """||X_j||_2 over every calibration token (Wanda's activation term)."""
        return self.sq_sum.sqrt()

    def hessian(self) -> torch.Tensor:
        if self.xtx is None:
            raise ValueError("Hessian was not collected for this layer")
        return 2.0 * self.xtx / max(self.count, 1)


def run_model(model: nn.Module, batch) -> None:
    """Call the model the way the batch is shaped: a dict is keywords, a tuple/list positional."""
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


def collect_input_stats(
    model: nn.Module,
    layer_names: Sequence[str],
    calib: Iterable,
    with_hessian: bool = False,
    progress: bool = False,
) -> dict[str, InputStats]:
    """One pass over `calib`; raises if it yields nothing or a selected layer never runs."""
    from tqdm.auto import tqdm

    stats: dict[str, InputStats] = {}
    handles = []
    for name in layer_names:
        layer = model.get_submodule(name)
        stats[name] = InputStats(layer.weight[0].numel(), with_hessian)

        def hook(module, inputs, _output, s=stats[name]) -> None:
            x = inputs[0]
            if isinstance(module, nn.Conv2d):  # the patches the kernel multiplies (im2col)
                x = F.unfold(x, module.kernel_size, module.dilation, module.padding,
                             module.stride).transpose(1, 2)  # fmt: skip
            s.add(x)

        handles.append(layer.register_forward_hook(hook))
    batches = 0
    try:
        with torch.no_grad():
            for batch in tqdm(calib, desc="calibration", unit="batch", disable=not progress):
                run_model(model, batch)
                batches += 1
    finally:
        for h in handles:
            h.remove()
    if batches == 0:
        raise ValueError("the calibration set is empty: give at least one batch of model inputs")
    silent = [n for n, s in stats.items() if s.count == 0]
    if silent:
        raise ValueError(
            f"{len(silent)} selected layers never ran on the calibration data "
            f"(e.g. {silent[:3]}); pass inputs that exercise them or exclude them"
        )
    return stats
