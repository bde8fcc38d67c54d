"""Infinite-width kernel recursions at initialisation: what signal-propagation theory predicts per layer.

For a BlockSpec and an input kernel Sigma_0 = X_0 X_0^T / d (measured on the embeddings of the same
batch), propagate Sigma_l = X_l X_l^T / d through every block in the infinite-width limit:

- a linear layer with i.i.d. N(0, s^2) weights scales the kernel by s^2 * fan_in; an orthogonal one keeps it;
- ReLU / leaky ReLU act through the arc-cosine kernel (closed form); GELU by a closed-form inner expectation and a
  zoomed 1-D rule (accurate at any variance, `gelu_kernel`); other smooth maps by 2-D Gauss-Hermite quadrature;
- RMSNorm / LayerNorm normalise the diagonal (features have zero mean at init, so both act alike);
- attention applies A Sigma A^T with A the attention matrix at init. Exact when W^Q = 0 (then the softmax
  is the centring matrix C, and shaped attention alpha I + beta A - gamma C is exactly alpha I). With a
  random W^Q the logits are Gaussian in the wide limit, with covariance s^2 N_ii' N_jj' (N the normalised
  input kernel, s = std(W^Q) std(W^K) d): E[A N A^T] over heads is then a Monte-Carlo average over sampled
  logits (`softmax="sampled"`), or A is replaced by C (`softmax="uniform"`, the small-logit limit).
  The result's notes say which approximation was used. U-SPA / E-SPA apply their fixed A_l = D_l softmax(Gamma_l).
- skip and branch add as in Eq. 1 / Eq. 7. A branch through fresh zero-mean weights is uncorrelated
  with its skip; a branch through identity values/projections is not, and the cross term is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from sigprop.blocks.attention import centring_matrix
from sigprop.blocks.model import ModelConfig
from sigprop.blocks.spa import SPA_ATTENTION, spa_attention
from sigprop.blocks.spec import BlockSpec
from sigprop.errors import SigpropError
from sigprop.probes.metrics import KERNEL_METRICS, entropy_ratio, single_thread

Kernel = torch.Tensor  # (B, T, T) float64
#: how a softmax with random W^Q enters: averaged over sampled Gaussian logits, or its small-logit limit C
SOFTMAX = ("sampled", "uniform")


@dataclass
class TheoryResult:
    """Predicted kernels per layer (0 = the input kernel) and the caveats of the prediction."""

    spec: BlockSpec
    kernels: list[Kernel]
    notes: list[str] = field(default_factory=list)
    key_mask: torch.Tensor | None = None
    entropy: list[float] = field(default_factory=list)  # blocks 1..L: mean attention-entropy ratio of the softmax

    @property
    def exact(self) -> bool:
        return not self.notes

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.kernels[0].shape)) if self.kernels else "-"
        how = "exact" if self.exact else "approximate: " + "; ".join(self.notes)
        return f"TheoryResult({self.spec.name}, {len(self.kernels)} kernels of {shape} (layers 0..{len(self.kernels) - 1}), {how})"

    def metrics(self, names: tuple[str, ...] = ("cos_mean", "norm_sq", "eff_rank", "stable_rank", "rank1_residual")) -> pd.DataFrame:
        """Tidy rows (layer, metric, value), averaged over the batch, like the probes' output."""
        rows = []
        for layer, K in enumerate(self.kernels):
            for name in names:
                v = KERNEL_METRICS[name](K, mask=self.key_mask)
                rows.append({"layer": layer, "metric": name, "value": float(v.mean())})
        return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# The pieces (pure functions on (B, T, T) float64 kernels)
# ---------------------------------------------------------------------------------------------------


def normalise(K: Kernel) -> tuple[Kernel, torch.Tensor]:
    """RMS/Layer norm with unit scale: K_ij / sqrt(K_ii K_jj). Also returns 1/sqrt(K_jj) (for cross terms)."""
    inv = torch.rsqrt(torch.diagonal(K, dim1=-2, dim2=-1).clamp_min(1e-30))
    return K * inv[..., :, None] * inv[..., None, :], inv


def relu_kernel(K: Kernel) -> Kernel:
    """E[relu(u_i) relu(u_j)] for u ~ N(0, K): the arc-cosine kernel of degree 1 (Cho & Saul 2009)."""
    d = torch.sqrt(torch.diagonal(K, dim1=-2, dim2=-1).clamp_min(0))
    norms = d[..., :, None] * d[..., None, :]
    cos = (K / norms.clamp_min(1e-30)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    return norms * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)


def activation_kernel(K: Kernel, activation: str, slope: float = 0.2, nodes: int = 24) -> Kernel:
    """E[phi(u_i) phi(u_j)] for u ~ N(0, K). `nodes` is unused (kept for callers): ReLU-like maps are closed-form and
    GELU's rule picks its own size from K's scale (`gelu_kernel`, within GELU_TOLERANCE at any variance)."""
    if activation == "linear":
        return K
    if activation == "relu":
        return relu_kernel(K)
    if activation == "leaky_relu":  # phi(x) = s x + (1 - s) relu(x)
        return slope * K + (1 - slope) ** 2 * relu_kernel(K)
    if activation == "gelu":
        return gelu_kernel(K)
    raise ValueError(activation)


def _cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _zoomed_rule(sigma: float, nodes: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1-D rule for E[f(z)], z ~ N(0, 1), when f varies on the scale 1/sigma near 0 (and on any scale up to 1):
    Gauss-Legendre on [-w, w] with w = min(1, 4 / sigma), on segments that grow 4x from w to 1, and on [1, 9] (the
    Gaussian mass beyond 9 is 2e-19), mirrored; weights times the density. A single segment [w, 9] is too coarse for
    what decays on the scale 1/sigma past w (1e-5 off at sigma 100); the graded ones keep every scale resolved."""
    w = min(1.0, 4.0 / max(sigma, 1e-12))
    edges = [w]
    while edges[-1] * 4 < 1:
        edges.append(edges[-1] * 4)
    edges += [1.0, 9.0] if w < 1 else [9.0]
    right = list(zip(edges[:-1], edges[1:]))
    x, q = np.polynomial.legendre.leggauss(nodes)
    pts, wts = [], []
    for lo, hi in [(-hi, -lo) for lo, hi in reversed(right)] + [(-w, w)] + right:
        pts.append((hi - lo) / 2 * x + (hi + lo) / 2)
        wts.append((hi - lo) / 2 * q)
    z = np.concatenate(pts)
    return torch.tensor(z), torch.tensor(np.concatenate(wts) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))


GELU_TOLERANCE = 1e-12  # relative error of gelu_kernel at any variance (tests/test_theory_exact.py)


def gelu_kernel(K: Kernel, derivative: bool = False) -> Kernel:
    """E[f(u_i) f(v_j)] for (u, v) ~ N(0, K), f = GELU (or its derivative), at any pre-activation variance.

    The inner expectation over v given u is closed-form (v | u ~ N(a, b^2), r = sqrt(1 + b^2)):
    E[GELU(v) | u] = a Phi(a / r) + b^2 phi(a / r) / r,  E[GELU'(v) | u] = Phi(a / r) + a phi(a / r) / r^3,
    so only the outer integral over u is numerical, on `_zoomed_rule` graded to the largest std in K: relative error
    below GELU_TOLERANCE = 1e-12 at pre-activation std 1e-3 ... 1e4 and any correlation, against adaptive references
    (tests/test_theory_exact.py), with 96 nodes up to std 4 and a few 32-node segments more per 4x beyond. The fixed
    24-node 2-D Gauss-Hermite rule it replaced is exact to ~1e-8 only near unit variance: 2e-2 off at depth 6 with
    weight std sqrt(2), 6e-2 (GELU) and 1e-1 (GELU') at std 8 ... 16."""
    K = K.to(torch.float64)
    var = torch.diagonal(K, dim1=-2, dim2=-1).clamp_min(0)  # (..., T)
    z, w = _zoomed_rule(float(var.max().sqrt()) if var.numel() else 1.0)
    z, w = z.to(K.dtype), w.to(K.dtype)
    si = var.sqrt()[..., :, None, None]  # (..., T, 1, 1): u = s_i z
    u = si * z  # (..., T, 1, n)
    ratio = (K / var[..., :, None].clamp_min(1e-300))[..., None]  # K_ij / K_ii
    a = ratio * u  # (..., T, T, n)
    b2 = (var[..., None, :] - K * K / var[..., :, None].clamp_min(1e-300)).clamp_min(0)[..., None]
    r = torch.sqrt(1 + b2)
    if derivative:
        outer = _cdf(u) + u * _pdf(u)
        inner = _cdf(a / r) + a * _pdf(a / r) / r**3
    else:
        outer = u * _cdf(u)
        inner = a * _cdf(a / r) + b2 * _pdf(a / r) / r
    return (outer * inner) @ w


def _quadrature_kernel(K: Kernel, phi, nodes: int) -> Kernel:
    """2-D Gauss-Hermite quadrature of E[phi(u) phi(v)] for every pair (i, j)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-x^2/2)
    x = torch.tensor(x, dtype=K.dtype)
    w = torch.tensor(w / math.sqrt(2 * math.pi), dtype=K.dtype)
    d = torch.sqrt(torch.diagonal(K, dim1=-2, dim2=-1).clamp_min(0))
    rho = (K / (d[..., :, None] * d[..., None, :]).clamp_min(1e-30)).clamp(-1, 1)
    z1, z2 = x[:, None], x[None, :]
    ww = (w[:, None] * w[None, :]).flatten()
    u = d[..., :, None, None, None] * z1  # (B,T,1,n,1)
    c = rho[..., None, None]
    v = d[..., None, :, None, None] * (c * z1 + torch.sqrt(1 - c**2) * z2)  # (B,T,T,n,n)
    return (phi(u) * phi(v)).flatten(-2) @ ww


@dataclass(frozen=True)
class _LinearMap:
    """What a (possibly absent) value/projection matrix does to kernels at init."""

    scale: float  # kernel multiplier
    deterministic: float | None  # c when the map is exactly c * I (cross terms survive), else None (zero-mean random)


def _matrix_map(kind: str, init: str, alpha: float, d: int, std: float) -> _LinearMap:
    if kind == "identity":
        return _LinearMap(1.0, 1.0)
    if kind == "dense":
        return _LinearMap(1.0, None) if init == "orthogonal" else _LinearMap(std**2 * d, None)
    # reparam at init: alpha * W_init (dW = 0)
    return _LinearMap(alpha**2, alpha if init == "identity" else None)


def shape_attention(S: torch.Tensor, C: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
    """Eq. 4/5 applied to a softmax matrix S (any leading dims): alpha I + beta S - gamma C."""
    if spec.attention == "softmax":
        return S
    T = S.shape[-1]
    gamma = spec.gamma if spec.attention == "shaped" else 0.0
    return (spec.beta * S - gamma * C) + spec.alpha * torch.eye(T, dtype=S.dtype)


def centring(T: int, causal: bool, key_mask: torch.Tensor | None) -> torch.Tensor:
    """C in float64 as (B|1, T, T)."""
    C = centring_matrix(T, causal, None if causal else key_mask, dtype=torch.float64)
    return C[:, 0] if C.ndim == 4 else C[None]


def _gauss_mean(var: torch.Tensor, f, nodes: int = 48) -> torch.Tensor:
    """E[f(u)] for u ~ N(0, var), elementwise over var, by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    x = torch.tensor(x, dtype=var.dtype)
    w = torch.tensor(w / math.sqrt(2 * math.pi), dtype=var.dtype)
    return f(var.clamp_min(0).sqrt()[..., None] * x) @ w


def pointwise_norm(spec: BlockSpec, kind: str, alpha: float):
    """(phi, phi') of a point-wise norm replacement at init (gamma = 1, beta = 0): DyT tanh(alpha x), Derf erf(alpha x + s)."""
    if kind == "dyt":
        return (lambda x: torch.tanh(alpha * x)), (lambda x: alpha / torch.cosh(alpha * x) ** 2)
    s = spec.derf_shift
    return (lambda x: torch.erf(alpha * x + s)), (lambda x: alpha * 2 / math.sqrt(math.pi) * torch.exp(-(alpha * x + s) ** 2))


def norm_kernel(K: Kernel, spec: BlockSpec, kind: str, alpha: float, nodes: int = 48) -> tuple[Kernel, torch.Tensor]:
    """What a norm (or its point-wise replacement) does to a kernel at init: (E[n(x_i) . n(x_j)] / d, c) with
    c_j = E[x_i . n(x)_j] / E[x_i . x_j] the factor a cross term with the norm's input picks up.
    rms / layer: K_ij / sqrt(K_ii K_jj) and c = 1 / sqrt(K_jj) (zero-mean features: both act alike).
    dyt / derf: the Gaussian expectation of phi(u_i) phi(u_j) (2-D quadrature) and, by Stein's lemma, c = E[phi'(u_j)].
    none: K and c = 1."""
    if kind == "none":
        return K, torch.ones(K.shape[:-1], dtype=K.dtype)
    if kind in ("rms", "layer"):
        return normalise(K)
    phi, dphi = pointwise_norm(spec, kind, alpha)
    return _quadrature_kernel(K, phi, nodes), _gauss_mean(torch.diagonal(K, dim1=-2, dim2=-1), dphi, nodes)


def gate_kernel(N: Kernel, std: float, d: int, nodes: int = 48) -> Kernel:
    """E[sigmoid(g_i) sigmoid(g_j)] for gate logits g = x W_theta, W_theta ~ N(0, std^2): g ~ N(0, std^2 d N)."""
    return _quadrature_kernel(std**2 * d * N, torch.sigmoid, nodes)


def sampled_logits(N: Kernel, spec: BlockSpec, logit_std: float, samples: int, seed: int) -> Kernel:
    """(samples, B, T, T) logits L = s P G P^T (P P^T = N, G i.i.d. normal): the wide-head limit of QK^T / sqrt(d_k).

    With QK-norm (the OP block) each head's queries and keys have unit RMS, so the logits see the normalised kernel
    and s = 1 (`logit_std` of `propagate`); a soft-cap c applies c tanh(L / c) to the drawn logits."""
    B, T, _ = N.shape
    if spec.qk_norm != "none":
        N = normalise(N)[0]
    with single_thread():
        lam, V = torch.linalg.eigh(N)
    P = V * lam.clamp_min(0).sqrt()[..., None, :]  # (B, T, T)
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(samples, B, T, T, generator=g, dtype=torch.float32)
    P32 = P.to(torch.float32)  # float32 is plenty for Monte-Carlo logits, and 2x cheaper
    L = (logit_std * (P32 @ G @ P32.transpose(-1, -2))).to(torch.float64)
    if spec.logit_softcap is not None:
        L = spec.logit_softcap * torch.tanh(L / spec.logit_softcap)
    return L


def sampled_softmax(N: Kernel, spec: BlockSpec, logit_std: float, causal: bool, key_mask: torch.Tensor | None, samples: int,
                    seed: int) -> torch.Tensor:
    """(samples, B, T, T) softmax probabilities over sampled logits (`sampled_logits`), masked as the model masks."""
    T = N.shape[-1]
    L = sampled_logits(N, spec, logit_std, samples, seed)
    allowed = torch.ones(T, T, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]
    return torch.softmax(L.masked_fill(~allowed, float("-inf")), dim=-1)


def sampled_attention(
    N: Kernel, spec: BlockSpec, C: torch.Tensor, logit_std: float, causal: bool, key_mask: torch.Tensor | None, samples: int, seed: int
) -> torch.Tensor:
    """(samples, B, T, T) shaped attention matrices over sampled logits."""
    return shape_attention(sampled_softmax(N, spec, logit_std, causal, key_mask, samples, seed), C, spec)


def mean_entropy_ratio(S: torch.Tensor, key_mask: torch.Tensor | None = None) -> float:
    """The mean attention-entropy ratio (`probes.metrics.entropy_ratio`) of softmax matrices (..., B, T, T)."""
    S = S.reshape(-1, *S.shape[-3:]).transpose(0, 1)  # (B, draws, T, T): the draws in place of heads
    return float(entropy_ratio(S / S.sum(-1, keepdim=True), key_mask).mean())


# ---------------------------------------------------------------------------------------------------
# One block, then the whole stack
# ---------------------------------------------------------------------------------------------------


def _sym(X: Kernel) -> Kernel:
    return X + X.transpose(-1, -2)


def block_kernel(K: Kernel, spec: BlockSpec, cfg: ModelConfig, layer: int, attention, state: dict | None = None) -> Kernel:
    """The kernel after one block, given the kernel before it.

    `attention(N, V) -> (E[A V A^T], E[A])` gives the attention matrix (its logits from the normalised kernel N) acting
    on the values' kernel V. `state` carries what later blocks need from earlier ones (value residual: block 1's values).
    """
    state = {} if state is None else state
    d = cfg.width
    std = spec.init_std
    value = (
        _LinearMap(1.0, 1.0)  # SAS footnote 6: first-layer value I + 0 with alpha_v = 1
        if layer == 0 and spec.first_layer_value and spec.value == "identity"
        else _matrix_map(spec.value, spec.value_init, spec.alpha_v, d, std)
    )
    proj = _matrix_map(spec.proj, spec.proj_init, spec.alpha_p, d, std)
    vp_scale = value.scale * proj.scale
    vp_c = value.deterministic * proj.deterministic if value.deterministic is not None and proj.deterministic is not None else None
    hidden = int(round(spec.mlp_mult * d))

    alpha_ff = spec.norm_alpha if spec.norm_alpha_ff is None else spec.norm_alpha_ff

    def normed(X: Kernel, norm: str, alpha: float = spec.norm_alpha) -> tuple[Kernel, torch.Tensor]:
        return norm_kernel(X, spec, norm, alpha)

    def attn(N: Kernel, X: Kernel, c: torch.Tensor) -> tuple[Kernel, Kernel | float]:
        """(kernel of the attention branch, R_ij = E[x_i . branch_j] / d). The cross term survives only through
        identity values/projections (zero-mean random ones decorrelate it); a sigmoid gate multiplies the branch's
        kernel by E[sigmoid(g_i) sigmoid(g_j)] and its cross term by E[sigmoid(g)] = 1/2 (independent weights)."""
        V = N
        if spec.value_residual is not None:  # ResFormer: lambda V_l + (1 - lambda) V_1, independent dense W^V: no cross term
            lam = spec.value_residual
            state.setdefault("v1", N)
            V = N if layer == 0 else lam**2 * N + (1 - lam) ** 2 * state["v1"]
        ANA, A = attention(N, V)
        gate = gate_kernel(N, std, d) if spec.attn_gate != "none" else None
        branch = vp_scale * (ANA if gate is None else ANA * gate)
        if vp_c is None:
            return branch, 0.0
        XN = X * c[..., None, :]  # E[x_i . norm(x)_j] / d
        return branch, vp_c * (XN @ A.transpose(-1, -2)) * (0.5 if gate is not None else 1.0)

    def out(branch: Kernel, cross: Kernel | float, alpha: float) -> tuple[Kernel, Kernel | float]:
        """Peri-LN's output norm on a branch (kernel normalised, cross term scaled by c of the norm); else as is."""
        if spec.norm_position != "peri":
            return branch, cross
        branch, c = normed(branch, spec.norm, alpha)
        return branch, cross if isinstance(cross, float) else cross * c[..., None, :]

    def mlp(N: Kernel) -> Kernel:
        pre = std**2 * d * N
        return std**2 * hidden * activation_kernel(pre, spec.activation, spec.leaky_slope)

    beta_ff = spec.resolve_beta_ff(cfg.depth)
    norm1 = "layer" if spec.norm == "none" and spec.first_layer_norm and layer == 0 else spec.norm
    sym = lambda R: R if isinstance(R, float) else _sym(R)  # noqa: E731

    if spec.norm_position == "sphere":  # nGPT: states on the unit sphere, each branch normalised, a step alpha towards it
        r = torch.diagonal(K, dim1=-2, dim2=-1).mean(-1)[..., None, None]  # ||x||^2 / d: 1 / d on the sphere
        al = spec.sphere_alpha

        def towards(X: Kernel, branch: Kernel, cross: Kernel | float) -> Kernel:
            B, cb = normalise(branch)
            R = cross if isinstance(cross, float) else cross * cb[..., None, :]
            return normalise((1 - al) ** 2 * X + al**2 * B + al * (1 - al) * sym(R))[0]

        U = normalise(K)[0]
        mid = towards(U, *attn(U, U, torch.ones(K.shape[:-1], dtype=K.dtype)))
        # unit-norm weight rows on unit-norm states: pre-activations with kernel ||x||^2 / d x the unit kernel
        hid = activation_kernel(r * mid, spec.activation, spec.leaky_slope)
        return r * towards(mid, hid, 0.0)
    if spec.parallel:
        N, c = normed(K, norm1)
        branch, cross = out(*attn(N, K, c), spec.norm_alpha)
        a, b = spec.alpha_comb, spec.resolve_beta_sa(cfg.depth)
        return a**2 * K + b**2 * branch + a * b * sym(cross) + beta_ff**2 * out(mlp(N), 0.0, alpha_ff)[0]
    a, b = spec.alpha_sa, spec.resolve_beta_sa(cfg.depth)
    if spec.norm_position == "post":
        branch, cross = attn(K, K, torch.ones(K.shape[:-1], dtype=K.dtype))
        mid = normed(a**2 * K + b**2 * branch + a * b * sym(cross), spec.norm)[0]
        return normed(spec.alpha_ff**2 * mid + beta_ff**2 * mlp(mid), spec.norm, alpha_ff)[0]
    N, c = normed(K, norm1)
    branch, cross = out(*attn(N, K, c), spec.norm_alpha)
    mid = a**2 * K + b**2 * branch + a * b * sym(cross)
    return spec.alpha_ff**2 * mid + beta_ff**2 * out(mlp(normed(mid, spec.norm, alpha_ff)[0]), 0.0, alpha_ff)[0]


def logit_scale(spec: BlockSpec, cfg: ModelConfig) -> float:
    """The std of a logit between unit-norm tokens at init: std(W^Q) std(W^K) d, or 1 under QK-norm (unit-RMS heads)."""
    q_std = spec.init_std if spec.query_init is None else spec.query_init
    if spec.qk_norm != "none":
        return 1.0 if q_std > 0 else 0.0
    return q_std * spec.init_std * cfg.width


def propagate(
    spec: BlockSpec,
    cfg: ModelConfig,
    sigma0: Kernel,
    key_mask: torch.Tensor | None = None,
    softmax: str = "sampled",
    samples: int = 8,
    seed: int = 0,
) -> TheoryResult:
    """Predicted kernels for layers 0..L from the input kernel sigma0 (B, T, T) or (T, T).

    softmax: how a softmax with random W^Q enters ("sampled" logits or the "uniform" limit C);
    irrelevant (exact) when W^Q = 0.
    """
    if not isinstance(sigma0, torch.Tensor) or sigma0.ndim not in (2, 3) or sigma0.shape[-1] != sigma0.shape[-2] or not sigma0.is_floating_point():
        got = tuple(sigma0.shape) if isinstance(sigma0, torch.Tensor) else type(sigma0).__name__
        raise SigpropError(f"sigma0 must be a float kernel of shape (T, T) or (B, T, T), got {got}")
    if not torch.isfinite(sigma0).all():
        raise SigpropError("sigma0 holds NaN or inf; accepted: a finite kernel, e.g. X @ X.T / d of the embeddings")
    check_softmax(softmax)
    K = sigma0.to(torch.float64)
    K = K[None] if K.ndim == 2 else K
    T = K.shape[-1]
    if key_mask is not None and tuple(key_mask.shape) != (K.shape[0], T):
        raise SigpropError(f"key_mask must have shape (B, T) = ({K.shape[0]}, {T}), got {tuple(key_mask.shape)}")
    C = centring(T, cfg.causal, key_mask)
    q_std = spec.init_std if spec.query_init is None else spec.query_init
    logit_std = logit_scale(spec, cfg)
    notes = []
    entropy: list[float] = []  # per block: the mean entropy ratio of its softmax (1 = uniform, 0 = entropy collapse)

    def fixed(A: torch.Tensor, S: torch.Tensor):
        """The attention callable of one fixed matrix A for every block (softmax part S)."""
        h = mean_entropy_ratio(S[None], key_mask)

        def attention(N: Kernel, V: Kernel) -> tuple[Kernel, Kernel]:
            entropy.append(h)
            return A @ V @ A.transpose(-1, -2), A

        return attention

    if spec.attention in SPA_ATTENTION:  # U-/E-SPA: A_l = D_l softmax(Gamma_l) per layer, exact at W^Q = 0
        target = spec.spa_rho if spec.attention == "u-spa" else spec.spa_gamma
        mats = iter([spa_attention(spec.attention, target, layer, cfg.depth, T)[0] for layer in range(cfg.depth)])

        def attention(N: Kernel, V: Kernel) -> tuple[Kernel, Kernel]:
            A = next(mats)
            entropy.append(mean_entropy_ratio(A[None], key_mask))
            return A @ V @ A.transpose(-1, -2), A

        if q_std != 0:
            notes.append(f"random W^Q (std {q_std}) around the {spec.attention} bias replaced by W^Q = 0")
    elif q_std == 0 or softmax == "uniform":  # logits exactly 0: A = C, no approximation (or the small-logit limit)
        attention = fixed(shape_attention(C, C, spec), C)
        if q_std != 0:
            notes.append(f"softmax replaced by its small-logit limit C (logit std {logit_std:.2f} at width {cfg.width})")
    else:  # sampled
        layer_seed = iter(range(seed, seed + cfg.depth))

        def attention(N: Kernel, V: Kernel) -> tuple[Kernel, Kernel]:
            S = sampled_softmax(N, spec, logit_std, cfg.causal, key_mask, samples, next(layer_seed))
            entropy.append(mean_entropy_ratio(S, key_mask))
            A = shape_attention(S, C, spec)
            return (A @ V @ A.transpose(-1, -2)).mean(0), A.mean(0)

        notes.append(f"softmax averaged over {samples} sampled Gaussian logit draws (logit std {logit_std:.2f} at width {cfg.width})")
    return TheoryResult(spec=spec, kernels=stack(K, spec, cfg, attention), notes=notes, key_mask=key_mask, entropy=entropy)


def check_softmax(softmax: str) -> None:
    if softmax not in SOFTMAX:
        raise SigpropError(f"unknown softmax treatment {softmax!r}; accepted: {', '.join(SOFTMAX)}")


def stack(K: Kernel, spec: BlockSpec, cfg: ModelConfig, attention) -> list[Kernel]:
    """The kernels after 0..L blocks, composed block by block in forward order (block 1's state carried on)."""
    kernels, state = [K], {}
    for layer in range(cfg.depth):
        kernels.append(block_kernel(kernels[-1], spec, cfg, layer, attention, state))
    return kernels


def propagate_batch(spec: BlockSpec, cfg: ModelConfig, x0: torch.Tensor, softmax: str = "sampled", samples: int = 8,
                    seed: int = 0) -> TheoryResult:
    """The joint kernel of every token of a batch, layers 0..L: Sigma over all B*T tokens (pairs across sequences
    too), from the embeddings x0 (B, T, d). This is what the outlier probes' `batch_corr_*` see (`batch_corr_of_kernel`).

    Attention mixes tokens within a sequence only, so the joint attention matrix is block-diagonal: exact for W^Q = 0
    (each block is shape(C)); with random W^Q each sequence's softmax is sampled from its own diagonal block of the
    kernel (`sampled_attention`), and E[A_b N_bc A_c^T] pairs the draws of the two sequences (the same sample index:
    the same weights). MLPs and norms act on the joint kernel entrywise, as on one sequence's.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim != 3:
        raise SigpropError(f"x0 must be embeddings of shape (B, T, d), got {getattr(x0, 'shape', type(x0).__name__)}")
    check_softmax(softmax)
    B, T, d = x0.shape
    flat = x0.reshape(B * T, d).to(torch.float64)
    K = (flat @ flat.T / d)[None]
    C = centring(T, cfg.causal, None)
    q_std = spec.init_std if spec.query_init is None else spec.query_init
    notes = []
    blocks = lambda A: torch.block_diag(*A)  # noqa: E731 - (B, T, T) -> (B T, B T)

    def joint(A: torch.Tensor) -> tuple[Kernel, Kernel]:
        """(E[A N A^T], E[A]) for one (B, T, T) attention matrix per sequence (no sampling)."""
        Aj = blocks(A)[None]
        return Aj, Aj

    if spec.attention in SPA_ATTENTION:
        target = spec.spa_rho if spec.attention == "u-spa" else spec.spa_gamma
        mats = iter([spa_attention(spec.attention, target, layer, cfg.depth, T)[0] for layer in range(cfg.depth)])
        attention = lambda N, V: (lambda Aj: (Aj @ V @ Aj.transpose(-1, -2), Aj))(joint(next(mats).expand(B, T, T))[0])  # noqa: E731
        if q_std != 0:
            notes.append(f"random W^Q (std {q_std}) around the {spec.attention} bias replaced by W^Q = 0")
    elif q_std == 0 or softmax == "uniform":
        Aj = joint(shape_attention(C, C, spec).expand(B, T, T))[0]
        attention = lambda N, V: (Aj @ V @ Aj.transpose(-1, -2), Aj)  # noqa: E731
        if q_std != 0:
            notes.append("softmax replaced by its small-logit limit C")
    else:  # sampled
        layer_seed = iter(range(seed, seed + cfg.depth))

        def attention(N: Kernel, V: Kernel) -> tuple[Kernel, Kernel]:
            N4 = N[0].reshape(B, T, B, T).transpose(1, 2)  # (B, B, T, T): block (b, c)
            V4 = V[0].reshape(B, T, B, T).transpose(1, 2)
            diag = N4[torch.arange(B), torch.arange(B)]  # (B, T, T)
            A = sampled_attention(diag, spec, C, logit_scale(spec, cfg), cfg.causal, None, samples, next(layer_seed))
            ANA = torch.einsum("sbij,bcjk,sclk->bcil", A, V4, A) / A.shape[0]
            return ANA.transpose(1, 2).reshape(1, B * T, B * T), blocks(A.mean(0))[None]

        notes.append(f"softmax averaged over {samples} sampled Gaussian logit draws per sequence")
    return TheoryResult(spec=spec, kernels=stack(K, spec, cfg, attention), notes=notes)


# ---------------------------------------------------------------------------------------------------
# Backward: gradient kernels, exact at W^Q = 0
# ---------------------------------------------------------------------------------------------------
#
# With W^Q = 0 the attention matrix is the constant A0 = shape(C) (identity for shaped attention) and
# carries no gradient into X (dlogits/dX = 0), so every block is a fixed linear token mixing followed
# by per-token maps. Gradient kernels G = g g^T / d then propagate backward like the forward kernels,
# with the derivative kernel E[phi'(u) phi'(u')] in place of the activation kernel (gradient
# independence; norms act as 1/rms, their projection terms are O(1/d)). Weight gradients follow exactly:
# ||dL/dW||_F^2 = sum_tt' (x_t . x_t')(g_t . g_t'), so the batch is one joint kernel over all B*T tokens.


def derivative_kernel(K: Kernel, activation: str, slope: float = 0.2, nodes: int = 24) -> Kernel:
    """E[phi'(u_i) phi'(u_j)] for u ~ N(0, K): what a pointwise nonlinearity does to gradient kernels (GELU' by
    `gelu_kernel`, within GELU_TOLERANCE at any variance; `nodes` is unused, kept for callers)."""
    if activation == "linear":
        return torch.ones_like(K)
    d = torch.sqrt(torch.diagonal(K, dim1=-2, dim2=-1).clamp_min(0))
    cos = (K / (d[..., :, None] * d[..., None, :]).clamp_min(1e-30)).clamp(-1.0, 1.0)
    both_positive = (math.pi - torch.arccos(cos)) / (2 * math.pi)  # P(u_i > 0, u_j > 0)
    if activation == "relu":
        return both_positive
    if activation == "leaky_relu":  # phi' = s + (1 - s) 1[u > 0]
        return slope**2 + slope * (1 - slope) + (1 - slope) ** 2 * both_positive
    if activation == "gelu":
        return gelu_kernel(K, derivative=True)
    raise ValueError(activation)


@dataclass
class GradTheoryResult:
    """Predicted gradient kernels dL/dX per layer (0..L, joint over the batch's tokens) and MLP weight-gradient norms."""

    spec: BlockSpec
    width: int
    grad_kernels: list[Kernel]  # (N, N) each, N = B * T
    mlp_grad_norms: list[float]  # block 1..L: sqrt(||dL/dW_in||^2 + ||dL/dW_out||^2)

    def metrics(self) -> pd.DataFrame:
        """Tidy rows (layer, metric, value) named like the backward probes: grad_norm, grad_mlp."""
        rows = [{"layer": l, "metric": "grad_norm", "value": float(torch.sqrt(self.width * torch.diagonal(G).clamp_min(0)).mean())}
                for l, G in enumerate(self.grad_kernels)]
        rows += [{"layer": l, "metric": "grad_mlp", "value": v} for l, v in enumerate(self.mlp_grad_norms, start=1)]
        return pd.DataFrame(rows)


def _check_grad_exact(spec: BlockSpec) -> None:
    q_std = spec.init_std if spec.query_init is None else spec.query_init
    skip = spec.alpha_comb if spec.parallel else spec.alpha_sa
    d_value = _matrix_map(spec.value, spec.value_init, spec.alpha_v, 2, spec.init_std).deterministic
    d_proj = _matrix_map(spec.proj, spec.proj_init, spec.alpha_p, 2, spec.init_std).deterministic
    if q_std != 0 or spec.norm_position != "pre" or (skip != 0 and d_value is not None and d_proj is not None):
        raise SigpropError(
            f"the gradient theory is exact only for pre-norm blocks with W^Q = 0 and no skip beside identity values "
            f"(e.g. sas, sas-p, v-skipinit); {spec.name!r} has query_init={spec.query_init}, norm_position={spec.norm_position!r}"
        )


def propagate_grad(spec: BlockSpec, cfg: ModelConfig, x0: torch.Tensor, grad_top: torch.Tensor, nodes: int = 24) -> GradTheoryResult:
    """Gradient kernels for layers L..0 from the measured embeddings x0 (B, T, d) and the measured
    dL/dX_L (B, T, d) at the top of the stack, for a W^Q = 0 spec (see `_check_grad_exact`)."""
    _check_grad_exact(spec)
    B, T, d = x0.shape
    flat = lambda x: x.reshape(B * T, -1).to(torch.float64)  # noqa: E731
    K = flat(x0) @ flat(x0).T / d
    A0 = shape_attention(centring(T, cfg.causal, None)[0], centring(T, cfg.causal, None)[0], spec)
    A = torch.block_diag(*[A0] * B)
    std, hidden = spec.init_std, int(round(spec.mlp_mult * d))
    beta_sa, beta_ff = spec.resolve_beta_sa(cfg.depth), spec.resolve_beta_ff(cfg.depth)

    def normed(X: Kernel, norm: str) -> tuple[Kernel, Kernel]:
        if norm == "none":
            return X, torch.ones(X.shape[-1], dtype=X.dtype)
        return normalise(X)

    def mlp_backward(N: Kernel, G_out: Kernel) -> tuple[Kernel, float]:
        """(gradient kernel at the MLP input, ||dW_in||^2 + ||dW_out||^2) for output gradient kernel G_out."""
        pre = std**2 * d * N
        Phi = activation_kernel(pre, spec.activation, spec.leaky_slope, nodes)
        G_h = std**2 * d * G_out
        G_pre = G_h * derivative_kernel(pre, spec.activation, spec.leaky_slope, nodes)
        sq = hidden * d * float((Phi * G_out).sum()) + d * hidden * float((N * G_pre).sum())
        return std**2 * hidden * G_pre, sq

    # Forward: keep what each block's backward needs.
    saved = []
    for layer in range(cfg.depth):
        value = (_LinearMap(1.0, 1.0) if layer == 0 and spec.first_layer_value and spec.value == "identity"
                 else _matrix_map(spec.value, spec.value_init, spec.alpha_v, d, std))
        vp = value.scale * _matrix_map(spec.proj, spec.proj_init, spec.alpha_p, d, std).scale
        norm1 = "layer" if spec.norm == "none" and spec.first_layer_norm and layer == 0 else spec.norm
        N1, inv1 = normed(K, norm1)
        attn = beta_sa**2 * vp * A @ N1 @ A.T
        if spec.parallel:
            saved.append((vp, N1, inv1, None, None))
            K = spec.alpha_comb**2 * K + attn + beta_ff**2 * std**2 * hidden * activation_kernel(std**2 * d * N1, spec.activation, spec.leaky_slope, nodes)
            continue
        mid = spec.alpha_sa**2 * K + attn
        N2, inv2 = normed(mid, spec.norm)
        saved.append((vp, N1, inv1, N2, inv2))
        K = spec.alpha_ff**2 * mid + beta_ff**2 * std**2 * hidden * activation_kernel(std**2 * d * N2, spec.activation, spec.leaky_slope, nodes)

    # Backward from the measured top gradient.
    G = flat(grad_top) @ flat(grad_top).T / d
    grads, mlp_norms = [G], []
    outer = lambda inv: inv[:, None] * inv[None, :]  # noqa: E731
    for vp, N1, inv1, N2, inv2 in reversed(saved):
        if spec.parallel:
            G_mlp, sq = mlp_backward(N1, beta_ff**2 * G)
            G_attn = beta_sa**2 * vp * A.T @ G @ A
            G = spec.alpha_comb**2 * G + (G_mlp + G_attn) * outer(inv1)
        else:
            G_mlp, sq = mlp_backward(N2, beta_ff**2 * G)
            G_mid = spec.alpha_ff**2 * G + G_mlp * outer(inv2)
            G = spec.alpha_sa**2 * G_mid + beta_sa**2 * vp * (A.T @ G_mid @ A) * outer(inv1)
        mlp_norms.append(math.sqrt(sq))
        grads.append(G)
    return GradTheoryResult(spec, d, grads[::-1], mlp_norms[::-1])
