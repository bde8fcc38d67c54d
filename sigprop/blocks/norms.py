"""Normalisations and the point-wise functions that replace them, one `make_norm` for every place a block has one.

- RMSNorm / LayerNorm: x / rms(x) (LayerNorm also centres), one learnable scale per channel (LayerNorm: and a bias).
- DyT (Zhu, Chen, He, LeCun, Liu, "Transformers without Normalization", CVPR 2025, arXiv 2503.10622; the authors'
  `dynamic_tanh.py`): gamma * tanh(alpha x) + beta, alpha one learnable scalar (init `alpha`), gamma = 1, beta = 0.
- Derf (Chen, Lu, Zhu, Sun, Liu, "Stronger Normalization-Free Transformers", arXiv 2512.10938, Eq. 10):
  gamma * erf(alpha x + s) + beta, alpha and s learnable scalars (inits `alpha`, `shift`).
Each carries its kernel map beside its forward: `kernel(K) -> (K', c)`, what it does to a token kernel at init
(gamma = 1, beta = 0), with c_j = E[x_i . n(x)_j] / E[x_i . x_j] the factor a cross term with its input picks up.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sigprop.kernels.maps import Kernel, gauss_mean, normalise, quadrature_kernel


class _MatchDtype:
    """Normalise in the weight's dtype: a bf16 stream under autocast (blocks without a skip, e.g. V-SkipInit)
    would otherwise miss torch's fused norm kernel ("Mismatch dtype between input and weight")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype) if x.dtype != self.weight.dtype else x)


class _Normalise:
    def kernel(self, K: Kernel) -> tuple[Kernel, torch.Tensor]:
        """K_ij / sqrt(K_ii K_jj) and c = 1 / sqrt(K_jj): features have zero mean at init, so RMS and Layer norm act alike."""
        return normalise(K)


class RMSNorm(_Normalise, _MatchDtype, nn.RMSNorm):
    pass


class LayerNorm(_Normalise, _MatchDtype, nn.LayerNorm):
    pass


class NoNorm(nn.Identity):
    """No norm where a block could have one (its kernel map is the identity, c = 1)."""

    def kernel(self, K: Kernel) -> tuple[Kernel, torch.Tensor]:
        return K, torch.ones(K.shape[:-1], dtype=K.dtype)


class _Pointwise:
    """A point-wise norm replacement phi(x) (gamma = 1, beta = 0 at init; the subclass gives phi and phi'): the kernel
    E[phi(u_i) phi(u_j)] by 2-D Gauss-Hermite quadrature and, by Stein's lemma, c = E[phi'(u_j)]. For tanh(0.5 x) against
    adaptive scipy quadrature: 1e-14 relative at input std 1, 1e-4 at std 4, 1-30% from std 16 on (the rule no longer
    resolves the saturating step); a stream's std at init is O(1) where these norms sit (tests/test_successors.py)."""

    def kernel(self, K: Kernel, nodes: int = 48) -> tuple[Kernel, torch.Tensor]:
        return quadrature_kernel(K, self.phi, nodes), gauss_mean(torch.diagonal(K, dim1=-2, dim2=-1), self.dphi, nodes)


class DyT(_Pointwise, nn.Module):
    """Dynamic tanh: gamma * tanh(alpha x) + beta (per-channel gamma, beta; one scalar alpha)."""

    def __init__(self, width: int, alpha: float):
        super().__init__()
        self.alpha0 = float(alpha)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(x.dtype) * torch.tanh(self.alpha.to(x.dtype) * x) + self.bias.to(x.dtype)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha0 * x)

    def dphi(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha0 / torch.cosh(self.alpha0 * x) ** 2


class Derf(_Pointwise, nn.Module):
    """Dynamic erf: gamma * erf(alpha x + s) + beta (per-channel gamma, beta; scalars alpha and s)."""

    def __init__(self, width: int, alpha: float, shift: float):
        super().__init__()
        self.alpha0, self.shift0 = float(alpha), float(shift)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.shift = nn.Parameter(torch.tensor(float(shift)))
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.alpha.to(x.dtype) * x + self.shift.to(x.dtype)
        return self.weight.to(x.dtype) * torch.erf(z) + self.bias.to(x.dtype)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.alpha0 * x + self.shift0)

    def dphi(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha0 * 2 / math.sqrt(math.pi) * torch.exp(-(self.alpha0 * x + self.shift0) ** 2)

    def kernel(self, K: Kernel, nodes: int = 48) -> tuple[Kernel, torch.Tensor]:
        """At s = 0 (the init) in closed form, exact at any variance (Williams 1997, the arcsin kernel):
        E[erf(a u_i) erf(a u_j)] = 2/pi arcsin(2 a^2 K_ij / sqrt((1 + 2 a^2 K_ii)(1 + 2 a^2 K_jj))) and
        c = E[erf'(a u)] = (2 a / sqrt(pi)) / sqrt(1 + 2 a^2 K_jj); otherwise by quadrature."""
        if self.shift0 != 0:
            return super().kernel(K, nodes)
        q = 1 + 2 * self.alpha0**2 * torch.diagonal(K, dim1=-2, dim2=-1)
        arg = 2 * self.alpha0**2 * K / torch.sqrt(q[..., :, None] * q[..., None, :])
        return 2 / math.pi * torch.arcsin(arg.clamp(-1, 1)), 2 * self.alpha0 / math.sqrt(math.pi) / torch.sqrt(q)


def make_norm(kind: str, width: int, eps: float, alpha: float = 0.5, shift: float = 0.0) -> nn.Module:
    """rms | layer | dyt | derf | none (identity)."""
    if kind == "rms":
        return RMSNorm(width, eps=eps)
    if kind == "layer":
        return LayerNorm(width, eps=eps)
    if kind == "dyt":
        return DyT(width, alpha)
    if kind == "derf":
        return Derf(width, alpha, shift)
    return NoNorm()
