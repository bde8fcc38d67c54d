"""The default probe metrics straight from a layer's activations, without the T x T kernel (issue 30).

`metrics.py` defines every kernel metric on Sigma = X X^T / d, which theory predicts; a probe holds X itself, and the
same numbers come cheaper from it:

- norm_sq, rank1_residual and cos_mean need only token norms and sums over tokens (O(T d));
- eff_rank and stable_rank need the nonzero eigenvalues of Sigma, which X^T X / d (d x d) shares: `gram` takes the
  smaller side, so at T = 1024, d = 768 the eigen-solve is of a 768 x 768 matrix instead of 1024 x 1024.

Everything stays float64: a float32 Gram puts eigenvalue errors of ~1e-7 lambda_max into eff_rank (up to 1e-5
relative on collapsed sequences, measured), which the 1e-6 agreement with the kernel path would not allow. The
float64 working set is bounded per chunk of sequences (`CHUNK_BYTES`), so no float64 copy of a whole batch exists.

`reference_metrics()` switches probes back to the kernel path (`metrics.py` on each kernel): the benchmark and the
equality test run both in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
from torch import Tensor

from sigprop.probes.metrics import KERNEL_METRICS, SPECTRAL_METRICS, cos_mean, eigenvalues, kernel, kurtosis, single_thread

#: Bound on a chunk's float64 working set (activations, Gram and eigen-solver copy), in bytes.
CHUNK_BYTES = 32 * 2**20
#: Sequences per chunk of the kernel path (the T x T kernels of a chunk are held at once).
REFERENCE_CHUNK = 16
#: Column blocks of `gram`: only the upper blocks are multiplied, 10/16 of a full product's work (from n = 512 on;
#: below it one product is faster than four).
GRAM_BLOCKS = 4
GRAM_BLOCKED_FROM = 512

_REFERENCE: ContextVar[bool] = ContextVar("sigprop_reference_metrics", default=False)


@contextlib.contextmanager
def reference_metrics() -> Iterator[None]:
    """Inside, probes compute every kernel metric from the T x T kernel (the path before issue 30)."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def using_reference() -> bool:
    """Whether `reference_metrics()` is active."""
    return _REFERENCE.get()


def chunk_size(T: int, d: int) -> int:
    """Sequences per chunk so that x in float64, its Gram and the eigen-solver's copy fit `CHUNK_BYTES`."""
    n = min(T, d)
    return max(1, CHUNK_BYTES // (8 * (T * d + 2 * n * n)))


def gram(x: Tensor) -> Tensor:
    """The smaller Gram of x (..., T, d): X^T X (d x d) if d < T, else X X^T (T x T); divided by d, both have the
    kernel's nonzero eigenvalues. Computed blockwise over the upper triangle (it is symmetric), in x's dtype."""
    a = x.transpose(-2, -1) if x.shape[-1] < x.shape[-2] else x  # (..., n, k): rows are the side kept
    n = a.shape[-2]
    if n < GRAM_BLOCKED_FROM:
        return a @ a.transpose(-2, -1)
    cuts = [n * i // GRAM_BLOCKS for i in range(GRAM_BLOCKS + 1)]
    out = a.new_empty(*a.shape[:-2], n, n)
    for i in range(GRAM_BLOCKS):
        rows = a[..., cuts[i] : cuts[i + 1], :]
        block = rows @ a[..., cuts[i] :, :].transpose(-2, -1)  # (..., rows, n - start): this block row, right of the diagonal
        out[..., cuts[i] : cuts[i + 1], cuts[i] :] = block
        out[..., cuts[i + 1] :, cuts[i] : cuts[i + 1]] = block[..., cuts[i + 1] - cuts[i] :].transpose(-2, -1)
    return out


def spectrum(x: Tensor) -> Tensor:
    """Eigenvalues (ascending, float64, negatives clamped to 0) of the smaller Gram of x: the kernel's nonzero ones."""
    G = gram(x.to(torch.float64))
    with single_thread():
        return torch.linalg.eigvalsh(G).clamp_min(0) / x.shape[-1]


def _masked(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(a float64 copy of x with padded tokens zeroed, number of real tokens (...,))."""
    x64 = x.to(torch.float64, copy=True)
    if mask is None:
        return x64, torch.full(x.shape[:-2], float(x.shape[-2]), dtype=torch.float64, device=x.device)
    m = mask.to(x.device, torch.float64)
    return x64 * m[..., None], m.sum(-1)


def token_stats(x64: Tensor, n: Tensor) -> dict[str, Tensor]:
    """norm_sq and cos_mean of the kernel of x64 (..., T, d) (padding already zeroed; n real tokens), in O(T d).

    tr K = sum ||x_t||^2 / d, and with u_t = x_t / ||x_t|| (0 for a zero token) the off-diagonal cosines sum to
    ||sum_t u_t||^2 - (the number of nonzero tokens)."""
    d = x64.shape[-1]
    norm = torch.linalg.vector_norm(x64, dim=-1)  # (..., T)
    tr = norm.square().sum(-1) / d
    nonzero = norm > 0
    w = torch.where(nonzero, 1.0 / torch.where(nonzero, norm, 1.0), 0.0)
    unit_sum = (w[..., None, :] @ x64)[..., 0, :]  # sum of the unit tokens, without forming them
    pairs = n * (n - 1)
    cos_sum = unit_sum.square().sum(-1) - nonzero.sum(-1).to(torch.float64)
    return {
        "norm_sq": torch.where(n > 0, tr / n.clamp_min(1), 0.0),
        "cos_mean": torch.where(pairs > 0, (cos_sum / pairs.clamp_min(1)).clamp(-1.0, 1.0), 0.0),
    }


def rank1_residual_(x64: Tensor, n: Tensor, mask: Tensor | None) -> Tensor:
    """rank1_residual ||X - 1 xbar^T||_F / ||X||_F over real tokens, centring x64 in place (it is a scratch copy).

    Summing the centred tokens avoids the cancellation of the kernel formula tr K - 1^T K 1 / n, which is only exact
    to ~1.5e-8 absolute (sqrt of float64's epsilon) once the tokens have collapsed."""
    tr = torch.linalg.vector_norm(x64, dim=(-2, -1)).square()  # norms: no (T, d) temporaries
    mean = x64.sum(-2, keepdim=True) / n.clamp_min(1)[..., None, None]
    x64.sub_(mean if mask is None else mean * mask.to(x64)[..., None])
    centred = torch.linalg.vector_norm(x64, dim=(-2, -1)).square()
    return torch.where(tr > 0, torch.sqrt((centred / torch.where(tr > 0, tr, 1.0)).clamp(0, 1)), 0.0)


def cos_mean_x(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """`metrics.cos_mean(kernel(x), mask)` in O(T d), a chunk of sequences at a time (x: (B, T, d)) -> (B,)."""
    step = chunk_size(*x.shape[-2:])
    out = []
    for s in range(0, x.shape[0], step):
        x64, n = _masked(x[s : s + step], None if mask is None else mask[s : s + step])
        out.append(token_stats(x64, n)["cos_mean"])
    return torch.cat(out)


def layer_cos_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """The probes' cos_mean of x (B, T, d) (gradients: grad_cos_mean): `cos_mean_x`, or the kernel path under
    `reference_metrics()`."""
    if not using_reference():
        return cos_mean_x(x, mask)
    return torch.cat([cos_mean(kernel(x[s : s + REFERENCE_CHUNK]), None if mask is None else mask[s : s + REFERENCE_CHUNK])
                      for s in range(0, x.shape[0], REFERENCE_CHUNK)])


def layer_metrics(x: Tensor, mask: Tensor | None, names: Sequence[str], keep_kernels: bool = False
                  ) -> tuple[dict[str, Tensor], list[Tensor]]:
    """({metric: (B,) values}, kernels kept) of one layer's activations x (B, T, d): the probes' per-layer work.

    `names` are kernel metrics or 'kurtosis'. Under `reference_metrics()` this is the kernel path."""
    if using_reference():
        return layer_metrics_reference(x, mask, names, keep_kernels)
    step = chunk_size(*x.shape[-2:])
    spectral = SPECTRAL_METRICS.keys() & set(names)
    values: dict[str, list[Tensor]] = {name: [] for name in names}
    kernels: list[Tensor] = []
    for s in range(0, x.shape[0], step):
        xs = x[s : s + step]
        ms = None if mask is None else mask[s : s + step].to(x.device)
        x64, n = _masked(xs, ms)
        stats = token_stats(x64, n)
        lam = spectrum(x64) if spectral else None
        if "rank1_residual" in names:
            stats["rank1_residual"] = rank1_residual_(x64, n, ms)  # last: centres x64
        for name in names:
            if name in SPECTRAL_METRICS:
                values[name].append(SPECTRAL_METRICS[name](lam))
            elif name in stats:
                values[name].append(stats[name])
            else:
                values[name].append(kurtosis(xs, ms))
        if keep_kernels:
            kernels.append(kernel(xs))
        del x64, lam
    return {name: torch.cat(v) for name, v in values.items()}, kernels


def layer_metrics_reference(x: Tensor, mask: Tensor | None, names: Sequence[str], keep_kernels: bool = False
                            ) -> tuple[dict[str, Tensor], list[Tensor]]:
    """The kernel path: each chunk's float64 T x T kernels, then `metrics.py` on them (one eigvalsh shared)."""
    values: dict[str, list[Tensor]] = {name: [] for name in names}
    kernels: list[Tensor] = []
    spectral = SPECTRAL_METRICS.keys() & set(names)
    for s in range(0, x.shape[0], REFERENCE_CHUNK):
        xs = x[s : s + REFERENCE_CHUNK]
        ms = None if mask is None else mask[s : s + REFERENCE_CHUNK].to(x.device)
        K = kernel(xs)
        lam = eigenvalues(K, ms) if spectral else None
        for name in names:
            if name in SPECTRAL_METRICS:
                values[name].append(SPECTRAL_METRICS[name](lam))
            elif name in KERNEL_METRICS:
                values[name].append(KERNEL_METRICS[name](K, ms))
            else:
                values[name].append(kurtosis(xs, ms))
        if keep_kernels:
            kernels.append(K)
    return {name: torch.cat(v) for name, v in values.items()}, kernels
