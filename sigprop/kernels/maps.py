"""Kernel maps: what one layer does to a token kernel Sigma = X X^T / d at initialisation, in the infinite-width limit.

Pure functions on (..., T, T) float64 kernels, shared by every module's `kernel` (beside its `forward`, the
neural-tangents stax idiom) and by the gradient theory:

- a pointwise nonlinearity acts through E[phi(u_i) phi(u_j)], u ~ N(0, Sigma): ReLU / leaky ReLU by the arc-cosine
  kernel (closed form), GELU by a closed-form inner expectation and a zoomed 1-D rule (`gelu_kernel`, accurate at any
  variance), other smooth maps (tanh, erf, sigmoid) by 2-D Gauss-Hermite quadrature (`quadrature_kernel`);
- RMSNorm / LayerNorm normalise the diagonal (`normalise`: features have zero mean at init, so both act alike);
- a linear layer with i.i.d. N(0, s^2) weights scales the kernel by s^2 fan_in (`LinearMap`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Kernel = torch.Tensor  # (..., T, T) float64


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


def quadrature_kernel(K: Kernel, phi: Callable[[torch.Tensor], torch.Tensor], nodes: int = 48,
                      budget: int = 1 << 24) -> Kernel:
    """2-D Gauss-Hermite quadrature of E[phi(u) phi(v)] for every pair (i, j): u = d_i z1, v = d_j (rho z1 + sqrt(1 - rho^2) z2).

    The map is symmetric, so each row block i0:i1 computes its pairs with j >= i0 once and mirrors them; blocks are sized
    so the (..., rows, T, n, n) temporary holds about `budget` numbers (a T = 128 batch of 8 at 48 nodes: ~130 MB, not
    the 2.4 GB of the whole square at once), and z2 is summed before z1 (one pass less over the temporary)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-x^2/2)
    x = torch.tensor(x, dtype=K.dtype)
    w = torch.tensor(w / math.sqrt(2 * math.pi), dtype=K.dtype)
    d = torch.sqrt(torch.diagonal(K, dim1=-2, dim2=-1).clamp_min(0))
    rho = (K / (d[..., :, None] * d[..., None, :]).clamp_min(1e-30)).clamp(-1, 1)
    z1, z2 = x[:, None], x[None, :]
    outer = phi(d[..., :, None] * x) * w  # (..., T, n): w_a phi(d_i z1_a)
    T = K.shape[-1]
    lead = max(1, K[..., 0, 0].numel())
    rows = max(1, budget // max(1, lead * T * nodes * nodes))
    out = torch.empty_like(K)
    for i0 in range(0, T, rows):
        i1 = min(T, i0 + rows)
        c = rho[..., i0:i1, i0:, None, None]
        v = d[..., None, i0:, None, None] * (c * z1 + torch.sqrt(1 - c**2) * z2)  # (..., rows, T - i0, n, n)
        inner = phi(v) @ w  # (..., rows, T - i0, n): sum over z2
        block = (inner * outer[..., i0:i1, None, :]).sum(-1)
        out[..., i0:i1, i0:] = block
        out[..., i1:, i0:i1] = block[..., :, i1 - i0:].transpose(-1, -2)
    return out


def gauss_mean(var: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], nodes: int = 48) -> torch.Tensor:
    """E[f(u)] for u ~ N(0, var), elementwise over var, by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    x = torch.tensor(x, dtype=var.dtype)
    w = torch.tensor(w / math.sqrt(2 * math.pi), dtype=var.dtype)
    return f(var.clamp_min(0).sqrt()[..., None] * x) @ w


def gate_kernel(N: Kernel, std: float, d: int, nodes: int = 48) -> Kernel:
    """E[sigmoid(g_i) sigmoid(g_j)] for gate logits g = x W_theta, W_theta ~ N(0, std^2): g ~ N(0, std^2 d N)."""
    return quadrature_kernel(std**2 * d * N, torch.sigmoid, nodes)


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


@dataclass(frozen=True)
class LinearMap:
    """What a d x d matrix does to kernels at init: K -> scale K; `deterministic` is c when the map is exactly c I
    (then a cross term with its input survives), None for a zero-mean random map (it decorrelates)."""

    scale: float
    deterministic: float | None

    def then(self, other: LinearMap) -> LinearMap:
        """This map followed by `other`."""
        c = self.deterministic * other.deterministic if self.deterministic is not None and other.deterministic is not None else None
        return LinearMap(self.scale * other.scale, c)


IDENTITY = LinearMap(1.0, 1.0)


def sym(R: Kernel | float) -> Kernel | float:
    """R + R^T: a cross term E[x_i . b_j] counted both ways in the kernel of a sum x + b (0.0 stays 0.0)."""
    return R if isinstance(R, float) else R + R.transpose(-1, -2)
