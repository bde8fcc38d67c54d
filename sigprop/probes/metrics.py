"""Signal-propagation metrics: pure, batched torch functions (one definition each; design.md).

For one sequence X in R^{T x d} the kernel is Sigma = X X^T / d (T x T). Every rank metric is a
function of the kernel alone, so theory (which predicts kernels) and measurement share one definition; probes
compute the same numbers from X without the T x T kernel (`sigprop.probes.direct`, held equal to these to 1e-6).
All kernel metrics take `(K, mask=None)`: K is (..., T, T), mask is (..., T) bool (True = real token)
and restricts the metric to real tokens (encoder padding). They return (...,) float64 tensors.

Conventions for degenerate inputs (never NaN):
- a zero token has cosine 0 with every other token and 1 with itself;
- `cos_mean` with fewer than two real tokens (no pairs) is 0;
- `eff_rank`, `stable_rank`, `rank1_residual` of a zero kernel are 0; `kurtosis` of zero activations is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

#: cos_mean at or above which a layer's tokens count as collapsed (rank collapse: analyze's verdicts, phase contours)
COLLAPSE_COS = 0.9


def _as_f64(x: ArrayLike) -> Tensor:
    return torch.as_tensor(x).to(torch.float64)


def _token_mask(x: Tensor, mask: ArrayLike | None) -> Tensor:
    """Float (..., T) mask of real tokens for x of shape (..., T, *)."""
    if mask is None:
        return torch.ones(x.shape[:-1], dtype=torch.float64, device=x.device)
    return torch.as_tensor(mask, device=x.device).to(torch.float64).expand(x.shape[:-1])


def _masked_kernel(K: ArrayLike, mask: ArrayLike | None) -> tuple[Tensor, Tensor]:
    """(K with padded rows/cols zeroed, float mask (..., T) of real tokens)."""
    K = _as_f64(K)
    m = _token_mask(K, mask)
    return (K if mask is None else K * m[..., :, None] * m[..., None, :]), m


def kernel(x: ArrayLike) -> Tensor:
    """Sigma = X X^T / d for x of shape (..., T, d), computed in float64 -> (..., T, T)."""
    x = _as_f64(x)
    return x @ x.transpose(-2, -1) / x.shape[-1]


def cosine_kernel(K: ArrayLike) -> Tensor:
    """rho_ij = K_ij / sqrt(K_ii K_jj); a zero token gets 0 off the diagonal and 1 on it."""
    K = _as_f64(K)
    diag = K.diagonal(dim1=-2, dim2=-1).clamp_min(0)
    denom = torch.sqrt(diag[..., :, None] * diag[..., None, :])
    rho = torch.where(denom > 0, K / torch.where(denom > 0, denom, 1.0), 0.0).clamp(-1.0, 1.0)
    eye = torch.eye(K.shape[-1], dtype=torch.bool, device=K.device)
    return torch.where(eye, 1.0, rho)


def cos_mean(K: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Mean off-diagonal token cosine (the rank-collapse signal: 1 = all tokens aligned); 0 if no pairs."""
    rho = cosine_kernel(K)
    m = _token_mask(rho, mask)
    pair = m[..., :, None] * m[..., None, :] * (1 - torch.eye(rho.shape[-1], dtype=torch.float64, device=rho.device))
    n = pair.sum((-2, -1))
    return torch.where(n > 0, (rho * pair).sum((-2, -1)) / n.clamp_min(1), 0.0)


def norm_sq(K: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Mean squared token norm per feature, mean_i K_ii (over real tokens); 0 if none."""
    K, m = _masked_kernel(K, mask)
    n = m.sum(-1)
    return torch.where(n > 0, K.diagonal(dim1=-2, dim2=-1).sum(-1) / n.clamp_min(1), 0.0)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small LAPACK calls on one thread: multi-threaded eigvalsh on T x T kernels is no faster,
    and on a busy machine its thread team can be ~100x slower (measured: 14 ms vs 8.9 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def eigenvalues(K: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Eigenvalues of the (masked) symmetric kernel in float64, negatives (round-off) clamped to 0."""
    K, _ = _masked_kernel(K, mask)
    K = (K + K.transpose(-2, -1)) / 2
    with single_thread():
        return torch.linalg.eigvalsh(K).clamp_min(0)


def eff_rank_of(lam: Tensor) -> Tensor:
    """Effective rank from eigenvalues (..., T): exp(entropy of lam / sum lam); 0 if all are 0."""
    total = lam.sum(-1, keepdim=True)
    p = lam / total.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0).sum(-1)
    return torch.where(total[..., 0] > 0, torch.exp(entropy), 0.0)


def stable_rank_of(lam: Tensor) -> Tensor:
    """Stable rank from ascending eigenvalues (..., T): sum lam / max lam; 0 if all are 0."""
    top = lam[..., -1]
    return torch.where(top > 0, lam.sum(-1) / top.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def eff_rank(K: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """exp(Shannon entropy of the normalised eigenvalues) (Roy & Vetterli 2007); 0 for a zero kernel."""
    return eff_rank_of(eigenvalues(K, mask))


def stable_rank(K: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """tr K / lambda_max; 0 for a zero kernel."""
    return stable_rank_of(eigenvalues(K, mask))


def rank1_residual(K: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """||X - 1 xbar^T||_F / ||X||_F = sqrt((tr K - 1^T K 1 / T) / tr K) (Dong et al. 2021); 0 if X = 0."""
    K, m = _masked_kernel(K, mask)
    tr = K.diagonal(dim1=-2, dim2=-1).sum(-1)
    centred = tr - K.sum((-2, -1)) / m.sum(-1).clamp_min(1)
    return torch.where(tr > 0, torch.sqrt((centred / torch.where(tr > 0, tr, 1.0)).clamp(0, 1)), 0.0)


def attention_entropy(A: ArrayLike) -> Tensor:
    """Row entropy -sum_j A_ij log A_ij of an attention matrix (..., T, T) -> (..., T); zeros ignored."""
    A = _as_f64(A)
    pos = A > 0
    return -torch.where(pos, A * torch.log(torch.where(pos, A, 1.0)), 0.0).sum(-1)


def kurtosis(x: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Outlier-feature kurtosis of activations x (..., T, d) (He et al. 2024) -> (...,).

    Per feature i, s_i = sqrt(mean over (real) tokens of x_ti^2) (uncentred RMS); then
    Kurt = mean_i s_i^4 / (mean_i s_i^2)^2. Equals 1 when every feature has the same RMS and grows
    with outlier features (one feature carrying everything gives d). 0 for all-zero activations.
    """
    x = _as_f64(x)
    m = _token_mask(x, mask)[..., None]
    s2 = (x.square() * m).sum(-2) / m.sum(-2).clamp_min(1)  # (..., d)
    second = s2.mean(-1)
    return torch.where(second > 0, s2.square().mean(-1) / torch.where(second > 0, second, 1.0).square(), 0.0)


def token_norm(x: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Mean over (real) tokens of the Euclidean norm ||x_t|| for x (..., T, d) -> (...,); 0 if none.

    On gradients g = dL/dX_l it is the backward signal per token (Noci et al. 2022: it vanishes for
    queries/keys once the tokens have collapsed)."""
    x = _as_f64(x)
    m = _token_mask(x, mask)
    return (x.norm(dim=-1) * m).sum(-1) / m.sum(-1).clamp_min(1)


#: The kernel metrics probes record by default; each is `fn(K, mask=None) -> (...,)`.
KERNEL_METRICS: dict[str, Callable[..., Tensor]] = {
    "cos_mean": cos_mean,
    "norm_sq": norm_sq,
    "eff_rank": eff_rank,
    "stable_rank": stable_rank,
    "rank1_residual": rank1_residual,
}

#: Kernel metrics that are functions of the eigenvalues alone (probes share one eigvalsh between them).
SPECTRAL_METRICS: dict[str, Callable[[Tensor], Tensor]] = {"eff_rank": eff_rank_of, "stable_rank": stable_rank_of}


# ------------------------------------------------------------------------------------------------
# Outlier features (He, Noci, Paliotta, Schlag, Hofmann, NeurIPS 2024, "Understanding and Minimising Outlier
# Features in Transformer Training"; definitions as the authors' `train_utils.report_outliers`), massive
# activations (Sun et al. 2024) and attention sinks (Xiao et al. 2024)
# ------------------------------------------------------------------------------------------------

#: The statistics `outlier_stats` returns, in order (the six of the sequel's code, then massive activations).
OUTLIER_METRICS = ("x_rms", "of_kurtosis", "feat_corr_rms", "batch_corr_mean", "batch_corr_rms", "max_median_ratio",
                   "massive_ratio", "massive_feature", "massive_token")


def _real_tokens(x: ArrayLike, mask: ArrayLike | None) -> tuple[Tensor, Tensor]:
    """(the activations of real tokens flattened to (N, d) float64, their position in the sequence (N,))."""
    x = _as_f64(x)
    T = x.shape[-2]
    pos = torch.arange(T, device=x.device).expand(x.shape[:-1]).reshape(-1)
    flat = x.reshape(-1, x.shape[-1])
    if mask is None:
        return flat, pos
    keep = torch.as_tensor(mask, device=x.device).bool().expand(x.shape[:-1]).reshape(-1)
    return flat[keep], pos[keep]


def outlier_stats(x: ArrayLike, mask: ArrayLike | None = None) -> dict[str, Tensor]:
    """The outlier-feature statistics of one layer's activations x (..., T, d), pooled over every (real) token.

    As the sequel's `report_outliers`: centre each token over width, x_rms = sqrt(mean x^2) (+1e-8), f = x / x_rms
    flattened to (N, d); then
    - of_kurtosis: the (unbiased) variance over features of the per-feature mean square s_i = mean_n f_ni^2. The
      authors log it as "kurtosis": since mean_i s_i = 1 it equals d / (d - 1) * (`kurtosis` - 1), with `kurtosis`
      taken on the centred activations pooled over the batch (sigprop's `kurtosis` is per sequence and uncentred);
    - feat_corr_rms: the RMS of the off-diagonal entries of the feature Gram F^T F / N;
    - batch_corr_mean / batch_corr_rms: the mean and RMS of the off-diagonal entries of the token Gram F F^T / d over
      the whole flattened batch (pairs across sequences included), computed through the d x d Gram (never N x N);
    - max_median_ratio: per token max_i |x_i| / median_i |x_i| (torch's lower median), averaged over tokens.
    And massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"): massive_ratio =
    max |x| / median |x| over the whole (uncentred) layer, with the feature and the token position holding the max.
    """
    raw, pos = _real_tokens(x, mask)
    n, d = raw.shape
    if n == 0:
        return {k: torch.tensor(0.0, dtype=torch.float64) for k in OUTLIER_METRICS}
    xc = raw - raw.mean(-1, keepdim=True)
    x_rms = xc.square().mean().sqrt() + 1e-8
    f = xc / x_rms
    gram = f.T @ f / n  # (d, d) feature Gram
    s = gram.diagonal()
    off = ~torch.eye(d, dtype=torch.bool, device=f.device)
    row_sq = f.square().sum(-1) / d  # diagonal of the token Gram F F^T / d
    pairs = max(n * (n - 1), 1)
    batch_sum = (f.sum(0).square().sum() / d - row_sq.sum()) / pairs
    batch_sq = ((n**2) * gram.square().sum() / d**2 - row_sq.square().sum()).clamp_min(0) / pairs
    a = xc.abs()
    peak = raw.abs().reshape(-1).argmax()
    median_all = raw.abs().reshape(-1).median()
    zero = torch.tensor(0.0, dtype=torch.float64)
    return {
        "x_rms": x_rms,
        "of_kurtosis": s.var() if d > 1 else zero,
        "feat_corr_rms": gram[off].square().mean().sqrt() if d > 1 else zero,
        "batch_corr_mean": batch_sum if n > 1 else zero,
        "batch_corr_rms": batch_sq.sqrt() if n > 1 else zero,
        "max_median_ratio": (a.max(-1).values / a.median(-1).values.clamp_min(torch.finfo(torch.float64).tiny)).mean(),
        "massive_ratio": raw.abs().reshape(-1)[peak] / median_all.clamp_min(torch.finfo(torch.float64).tiny),
        "massive_feature": (peak % d).to(torch.float64),
        "massive_token": pos[peak // d].to(torch.float64),
    }


def batch_corr_of_kernel(K: ArrayLike) -> tuple[Tensor, Tensor]:
    """(batch_corr_mean, batch_corr_rms) of a joint token kernel K (..., N, N) over a flattened batch: the
    off-diagonal mean and RMS of K / mean(diag K) -- what `outlier_stats` measures, predicted from theory's kernel
    (the width-centring it applies changes a kernel by O(1/d) at init, where features have zero mean)."""
    K = _as_f64(K)
    n = K.shape[-1]
    G = K / K.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None].clamp_min(torch.finfo(torch.float64).tiny)
    off = ~torch.eye(n, dtype=torch.bool, device=K.device)
    vals = G[..., off]
    return vals.mean(-1), vals.square().mean(-1).sqrt()


def sink_share(A: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Attention-sink share (Xiao et al. 2024): the mean attention probability on the first token, per head.

    A: (B, H, T, T) softmax probabilities -> (H,). The mean runs over the batch and the queries t >= 1 (real tokens
    only under a (B, T) mask): under causal masking query 0 can attend only to token 0, which says nothing."""
    A = _as_f64(A)
    first = A[..., 1:, 0]  # (B, H, T - 1)
    if mask is None:
        return first.mean((0, -1)) if first.shape[-1] else torch.zeros(A.shape[1], dtype=torch.float64)
    m = torch.as_tensor(mask, device=A.device).to(torch.float64)[:, None, 1:]
    return (first * m).sum((0, -1)) / m.sum((0, -1)).clamp_min(1)


# ------------------------------------------------------------------------------------------------
# Failure modes of attention (issue 28): entropy collapse, the spectral gap, and the exponents of signal propagation
# ------------------------------------------------------------------------------------------------


def keys_per_row(A: Tensor, mask: ArrayLike | None = None) -> Tensor:
    """(B, T) the number of keys each query row may attend: t + 1 under causal masking (detected: A is lower-
    triangular), else the real tokens of the sequence."""
    T = A.shape[-1]
    if bool((A.triu(1) == 0).all()):
        return torch.arange(1, T + 1, dtype=torch.float64, device=A.device).expand(A.shape[0], T)
    n = torch.full((A.shape[0],), float(T), dtype=torch.float64, device=A.device) if mask is None else \
        torch.as_tensor(mask, device=A.device).to(torch.float64).sum(-1)
    return n[:, None].expand(A.shape[0], T)


def entropy_ratio(A: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Attention entropy as a fraction of its maximum, per head (B, H, T, T) -> (B, H): the mean over query rows (with
    at least two keys) of H(row) / log(keys). 1 = uniform attention (rank collapse's regime at small logits), near 0
    = every query on one key: entropy collapse (Zhai et al. 2023; Giorlandino & Goldt, ICLR 2026, arXiv 2505.24333)."""
    A = _as_f64(A)
    keys = keys_per_row(A, mask)[:, None, :]  # (B, 1, T)
    ok = (keys > 1).to(torch.float64)
    if mask is not None:
        ok = ok * torch.as_tensor(mask, device=A.device).to(torch.float64)[:, None, :]
    ratio = attention_entropy(A) / torch.log(keys.clamp_min(2))
    return (ratio * ok).sum(-1) / ok.sum(-1).clamp_min(1)


def singular_ratio(A: ArrayLike) -> Tensor:
    """sigma_2 / sigma_1 of each attention matrix (B, H, T, T) -> (B, H). A softmax matrix is row-stochastic, so
    sigma_1 >= 1; a small ratio (a large spectral gap) is what drives rank collapse in width ("Mind the Gap",
    Naderi et al., ICML 2025, arXiv 2410.07799)."""
    A = _as_f64(A)
    with single_thread():
        s = torch.linalg.svdvals(A)
    return s[..., 1] / s[..., 0].clamp_min(torch.finfo(torch.float64).tiny)


def layer_exponent(values: ArrayLike) -> float:
    """The least-squares slope of log(values) over the layers: the per-layer growth rate of a quantity that
    propagates geometrically. On 1 - cos_mean it is the angle exponent, on the gradient norm read from the last layer
    back the gradient exponent (Cowsik, Nebabu, Qi, Ganguli, arXiv 2403.02579: near 0 at the edge of chaos, where
    transformers train); NaN with fewer than two positive values."""
    v = np.asarray(values, dtype=np.float64)
    layers = np.arange(len(v))
    ok = v > 0
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(layers[ok], np.log(v[ok]), 1)[0])
