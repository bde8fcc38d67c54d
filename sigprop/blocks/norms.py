"""Normalisations and the point-wise functions that replace them, one `make_norm` for every place a block has one.

- RMSNorm / LayerNorm: x / rms(x) (LayerNorm also centres), one learnable scale per channel (LayerNorm: and a bias).
- DyT (Zhu, Chen, He, LeCun, Liu, "Transformers without Normalization", CVPR 2025, arXiv 2503.10622; the authors'
  `dynamic_tanh.py`): gamma * tanh(alpha x) + beta, alpha one learnable scalar (init `alpha`), gamma = 1, beta = 0.
- Derf (Chen, Lu, Zhu, Sun, Liu, "Stronger Normalization-Free Transformers", arXiv 2512.10938, Eq. 10):
  gamma * erf(alpha x + s) + beta, alpha and s learnable scalars (inits `alpha`, `shift`).
Their kernel maps (what each does to a token kernel at init, gamma = 1 and beta = 0) are `theory.norm_kernel`.
"""

from __future__ import annotations

import torch
from torch import nn


class _MatchDtype:
    """Normalise in the weight's dtype: a bf16 stream under autocast (blocks without a skip, e.g. V-SkipInit)
    would otherwise miss torch's fused norm kernel ("Mismatch dtype between input and weight")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype) if x.dtype != self.weight.dtype else x)


class RMSNorm(_MatchDtype, nn.RMSNorm):
    pass


class LayerNorm(_MatchDtype, nn.LayerNorm):
    pass


class DyT(nn.Module):
    """Dynamic tanh: gamma * tanh(alpha x) + beta (per-channel gamma, beta; one scalar alpha)."""

    def __init__(self, width: int, alpha: float):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(x.dtype) * torch.tanh(self.alpha.to(x.dtype) * x) + self.bias.to(x.dtype)


class Derf(nn.Module):
    """Dynamic erf: gamma * erf(alpha x + s) + beta (per-channel gamma, beta; scalars alpha and s)."""

    def __init__(self, width: int, alpha: float, shift: float):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.shift = nn.Parameter(torch.tensor(float(shift)))
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.alpha.to(x.dtype) * x + self.shift.to(x.dtype)
        return self.weight.to(x.dtype) * torch.erf(z) + self.bias.to(x.dtype)


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
    return nn.Identity()
