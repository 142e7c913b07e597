"""GLUESTICK: a rank-r correction of what pruning removed, kept as two thin factors.

Per pruned layer, W_gap = W_dense - W_pruned; its truncated SVD W_gap ~ U_r S_r V_r^T is stored as
A = U_r S_r (d_out x r) and B = V_r^T (r x d_in), and the layer computes
y = W_pruned x + b + A (B x). By Eckart-Young the Frobenius error of the exact correction is the
norm of the discarded singular values; r = 0 is the pruned layer, r >= min(d_out, d_in) the dense
one. The randomized SVD (Halko et al., `torch.svd_lowrank`) trades a little of that optimality
for time on 7B-sized layers; its error is measured, not assumed.

Beyond the paper, `correction="activation"` (EoRA's idea, arXiv 2410.21271) minimises what the
robot feels, the output error ||(W_gap - A B) X^T||_F on the calibration inputs X (tokens as
rows), instead of the weight error. With C = X^T X + delta I = Q L Q^T (float64; delta a small
fraction of C's mean diagonal, so rank-deficient or zero input channels stay finite),
||M X^T||_F^2 = ||M Q L^(1/2)||_F^2 up to delta, so the truncated SVD of W_gap Q L^(1/2) is the
optimum; its right factor is mapped back by L^(-1/2) Q^T. A and B keep the plain SVD's shapes,
so the runtime and the artifact format do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from vla_pruned_ros.compression.quantize import check_factor_dtype, dequantize, quantize
from vla_pruned_ros.compression.spectrum import spectrum_stats

SVD_METHODS = ("exact", "randomized")
CORRECTIONS = ("svd", "activation")
DEFAULT_DAMP = 0.01  # delta = DEFAULT_DAMP * mean(diag(X^T X)), SparseGPT's convention


@dataclass(frozen=True)
class GapFactors:
    a: torch.Tensor  # (d_out, r) = U_r S_r
    b: torch.Tensor  # (r, d_in) = V_r^T
    singular_values: torch.Tensor  # exact: all of them; randomized: the top ones it found
    gap_norm: float  # ||W_gap||_F, exact either way
    error: float  # ||W_gap - A B||_F achieved (exact SVD: from the discarded values)
    svd: str = "exact"
    # "activation": singular_values, gap_norm and error are in the damped output metric
    # ||M (X^T X + delta I)^(1/2)||_F, and `damping` is the delta added
    correction: str = "svd"
    damping: float = 0.0

    @property
    def rank(self) -> int:
        return self.a.shape[1]

    @property
    def relative_error(self) -> float:
        return self.error / self.gap_norm if self.gap_norm > 0 else 0.0

    def energy_kept(self) -> float:
        return 1.0 - self.relative_error**2 if self.gap_norm > 0 else 1.0

    def spectrum(self) -> dict:
        """The layer's spectrum entry (singular-value statistics, how the factors were found,
        error and energy kept), as `GluestickLinear.spectrum` and the artifact manifest hold
        it: one builder, so a layer compressed in memory and one streamed to disk report the
        same keys."""
        entry = spectrum_stats(self.singular_values, self.rank)
        entry.update(
            svd=self.svd,
            correction=self.correction,
            relative_error=round(self.relative_error, 6),
            energy_kept=round(self.energy_kept(), 6),
        )
        if self.correction == "activation":
            entry["damping"] = self.damping
        return entry


def gap_matrix(dense: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    if dense.shape != pruned.shape:
        raise ValueError(f"dense {tuple(dense.shape)} and pruned {tuple(pruned.shape)} differ")
    return (dense.detach().double() - pruned.detach().double()).reshape(dense.shape[0], -1)


def _truncated_svd(
    matrix: torch.Tensor, r: int, svd: str, oversample: int, power_iters: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, str]:
    """(U_r S_r, V_r^T, singular values, ||matrix - U_r S_r V_r^T||_F, method): the one
    truncated SVD both corrections use."""
    full = min(matrix.shape)
    if svd == "exact" or r == 0 or r + oversample >= full:
        if matrix.shape[0] < matrix.shape[1]:  # LAPACK is ~2x faster on tall matrices
            vt, s, ut = torch.linalg.svd(matrix.T, full_matrices=False)
            u, vh = ut.T, vt.T
        else:
            u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return u[:, :r] * s[:r], vh[:r], s, float(s[r:].square().sum().sqrt()), "exact"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(matrix, q=r + oversample, niter=power_iters)
    a, b = u[:, :r] * s[:r], v[:, :r].T
    return a, b, s, float(torch.linalg.matrix_norm(matrix - a @ b)), "randomized"


def _check(rank: int, svd: str) -> None:
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    if svd not in SVD_METHODS:
        raise ValueError(f"unknown SVD method {svd!r}; use one of {SVD_METHODS}")


def gap_factors(
    dense: torch.Tensor,
    pruned: torch.Tensor,
    rank: int,
    svd: str = "exact",
    oversample: int = 10,
    power_iters: int = 2,
    seed: int = 0,
) -> GapFactors:
    """Truncated SVD of the pruning gap in float64 (one layer at a time, offline)."""
    _check(rank, svd)
    gap = gap_matrix(dense, pruned)
    gap_norm = float(torch.linalg.matrix_norm(gap))
    r = min(rank, min(gap.shape))
    a, b, s, error, method = _truncated_svd(gap, r, svd, oversample, power_iters, seed)
    dtype = dense.dtype if dense.is_floating_point() else torch.float32
    return GapFactors(
        a.to(dtype).contiguous(), b.to(dtype).contiguous(), s, gap_norm, error, method
    )


@dataclass(frozen=True)
class InputBasis:
    """The damped input covariance X^T X + delta I = Q L Q^T of one layer (float64)."""

    q: torch.Tensor  # (d_in, d_in) eigenvectors
    sqrt_l: torch.Tensor  # (d_in,) square roots of the eigenvalues, all >= sqrt(delta) > 0
    damping: float  # delta

    def weigh(self, m: torch.Tensor) -> torch.Tensor:
        """M Q L^(1/2): its Frobenius norm is M's output error on the (damped) inputs."""
        return (m @ self.q) * self.sqrt_l

    def unweigh(self, m: torch.Tensor) -> torch.Tensor:
        """The inverse map, M L^(-1/2) Q^T."""
        return (m / self.sqrt_l) @ self.q.T


def input_basis(xtx: torch.Tensor, damp: float = DEFAULT_DAMP) -> InputBasis:
    """Eigendecompose X^T X + delta I in float64, delta = damp * mean(diag(X^T X)) (1 when the
    inputs are all zero: the correction is then the plain SVD). Damping is what keeps a
    never-excited input channel (a zero eigenvalue) from blowing up L^(-1/2)."""
    if xtx.dim() != 2 or xtx.shape[0] != xtx.shape[1]:
        raise ValueError(f"X^T X must be a square matrix, got shape {tuple(xtx.shape)}")
    if damp <= 0:
        raise ValueError(f"damping must be > 0 (it keeps L^(-1/2) finite), got {damp}")
    c = xtx.detach().double()
    if not torch.isfinite(c).all():
        raise ValueError("X^T X holds non-finite values: check the calibration inputs")
    c = (c + c.T) / 2
    mean = float(c.diagonal().mean())
    delta = damp * mean if mean > 0 else 1.0
    c.diagonal().add_(delta)
    values, q = torch.linalg.eigh(c)
    return InputBasis(q, values.clamp_min(delta).sqrt(), delta)


def activation_factors(
    dense: torch.Tensor,
    pruned: torch.Tensor,
    rank: int,
    xtx: torch.Tensor,
    damp: float = DEFAULT_DAMP,
    svd: str = "exact",
    oversample: int = 10,
    power_iters: int = 2,
    seed: int = 0,
    basis: InputBasis | None = None,
) -> GapFactors:
    """The rank-r factors minimising ||(W_gap - A B) X^T||_F given X^T X (see the module
    docstring). At full rank A B = W_gap exactly; at any rank the output error on those inputs
    is no larger than the plain SVD's (it is the optimum of the damped objective, and damping
    only adds the weight error that the SVD minimises)."""
    _check(rank, svd)
    gap = gap_matrix(dense, pruned)
    if xtx.shape != (gap.shape[1], gap.shape[1]):
        raise ValueError(f"X^T X of shape {tuple(xtx.shape)} does not fit a layer with "
                         f"{gap.shape[1]} inputs")  # fmt: skip
    basis = basis or input_basis(xtx, damp)
    weighted = basis.weigh(gap)
    r = min(rank, min(gap.shape))
    a, bw, s, error, method = _truncated_svd(weighted, r, svd, oversample, power_iters, seed)
    b = basis.unweigh(bw)
    dtype = dense.dtype if dense.is_floating_point() else torch.float32
    return GapFactors(
        a.to(dtype).contiguous(), b.to(dtype).contiguous(), s,
        float(torch.linalg.matrix_norm(weighted)), error, method, "activation", basis.damping,
    )  # fmt: skip


def layer_factors(
    dense: torch.Tensor,
    pruned: torch.Tensor,
    rank: int,
    correction: str = "svd",
    xtx: torch.Tensor | None = None,
    damp: float = DEFAULT_DAMP,
    svd: str = "exact",
    **options,
) -> GapFactors:
    """One entry point for either correction (the in-memory, streaming and block-by-block paths
    all call it)."""
    if correction == "svd":
        return gap_factors(dense, pruned, rank, svd=svd, **options)
    if correction == "activation":
        if xtx is None:
            raise ValueError("the activation correction needs the layer's X^T X from "
                             "calibration inputs")  # fmt: skip
        return activation_factors(dense, pruned, rank, xtx, damp, svd=svd, **options)
    raise ValueError(f"unknown correction {correction!r}; use one of {CORRECTIONS}")


def corrected_weight(
    pruned: torch.Tensor, factors: GapFactors, factor_dtype: str = "float32"
) -> torch.Tensor:
    """W_pruned + A B as the runtime computes it (factors stored in `factor_dtype`): what the
    layer's next consumers see, for calibrating them on already-compressed outputs."""
    if factors.rank == 0:
        return pruned
    a = dequantize(*quantize(factors.a, factor_dtype), torch.float32)
    b = dequantize(*quantize(factors.b, factor_dtype), torch.float32)
    return (pruned.float() + (a @ b).reshape(pruned.shape)).to(pruned.dtype)


def output_error(
    dense: torch.Tensor, corrected: torch.Tensor, xtx: torch.Tensor
) -> tuple[float, float]:
    """(||(W_dense - W_corrected) X^T||_F, ||W_dense X^T||_F) from X^T X, without the tokens."""
    d = gap_matrix(dense, corrected)
    w = dense.detach().double().reshape(d.shape)
    c = xtx.detach().double()
    err = float(((d @ c) * d).sum().clamp_min(0).sqrt())
    ref = float(((w @ c) * w).sum().clamp_min(0).sqrt())
    return err, ref


class GluestickLinear(nn.Module):
    """A pruned linear layer with an optional rank-r correction: W_p x + b + A (B x).

    The factors are stored in `factor_dtype` (float32, float16 or int8 with one scale per
    tensor) and dequantised to the input's dtype on the fly, as the authors do.
    """

    def __init__(
        self,
        pruned: nn.Linear | GluestickLinear,
        factors: GapFactors | None = None,
        factor_dtype: str = "float32",
        pattern: str = "",
        method: str = "",
    ) -> None:
        super().__init__()
        shape = pruned.weight.shape
        self.out_features, self.in_features = shape[0], int(torch.tensor(shape[1:]).prod())
        self.pattern = pattern or getattr(pruned, "pattern", "")
        self.method = method or getattr(pruned, "method", "")
        self.factor_dtype = check_factor_dtype(factor_dtype)
        self.weight = nn.Parameter(pruned.weight.detach().clone(), requires_grad=False)
        self.bias = (
            None
            if pruned.bias is None
            else nn.Parameter(pruned.bias.detach().clone(), requires_grad=False)
        )
        self.spectrum: dict | None = None
        self.singular_values: torch.Tensor | None = None  # not a buffer: not part of the model
        if factors is not None:
            self.singular_values = factors.singular_values.float()
            self.spectrum = factors.spectrum()
        r = factors.rank if factors is not None else 0
        a, a_scale = quantize(factors.a if r else self.weight.new_zeros(0, 0), factor_dtype)
        b, b_scale = quantize(factors.b if r else self.weight.new_zeros(0, 0), factor_dtype)
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.register_buffer("a_scale", a_scale)
        self.register_buffer("b_scale", b_scale)

    @property
    def rank(self) -> int:
        return self.a.shape[1] if self.a.numel() else 0

    def dense_weight(self) -> torch.Tensor:
        """The pruned weight as a dense tensor (zeros where pruned)."""
        return self.weight

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        a = dequantize(self.a, self.a_scale, x.dtype)
        b = dequantize(self.b, self.b_scale, x.dtype)
        return F.linear(F.linear(x, b), a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.dense_weight(), self.bias)
        return y + self.correction(x) if self.rank else y


class GluestickConv2d(GluestickLinear):
    """The same for a Conv2d (groups=1): the weight is pruned as the (out, in*kh*kw) matrix the
    convolution multiplies with, and the correction is a rank-r conv (B as r kernels of the
    layer's size and stride) followed by a 1x1 conv (A)."""

    def __init__(
        self,
        pruned: nn.Conv2d | GluestickConv2d,
        factors: GapFactors | None = None,
        factor_dtype: str = "float32",
        pattern: str = "",
        method: str = "",
    ) -> None:
        super().__init__(pruned, factors, factor_dtype, pattern, method)
        self.kernel_size = tuple(pruned.weight.shape[2:]) if hasattr(pruned, "weight") and (
            pruned.weight.dim() == 4) else tuple(pruned.kernel_size)  # fmt: skip
        self.in_channels = pruned.weight.shape[1]
        self.stride, self.padding, self.dilation = (
            tuple(pruned.stride), pruned.padding if isinstance(pruned.padding, str)
            else tuple(pruned.padding), tuple(pruned.dilation),
        )  # fmt: skip

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        a = dequantize(self.a, self.a_scale, x.dtype)
        b = dequantize(self.b, self.b_scale, x.dtype)
        kernels = b.reshape(self.rank, self.in_channels, *self.kernel_size)
        return F.conv2d(self._conv(x, kernels), a.reshape(*a.shape, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv(x, self.dense_weight(), self.bias)
        return y + self.correction(x) if self.rank else y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"pattern={self.pattern or '?'}, rank={self.rank}, factors={self.factor_dtype}"
        )
