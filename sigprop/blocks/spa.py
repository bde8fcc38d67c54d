"""U-SPA and E-SPA: attention at init chosen so the token kernel follows a target schedule.

From He, Martens, Zhang, Botev, Brock, Smith, Teh (ICLR 2023), "Deep Transformers without Shortcuts:
Modifying Self-attention for Faithful Signal Propagation" (arXiv 2302.10322), the predecessor of the
paper sigprop reproduces. With W^Q = 0 the softmax sees only a fixed positional bias Gamma_l, and with
orthogonal values and projections an attention layer maps the token kernel as Sigma_l = A_l Sigma_{l-1} A_l^T
(exactly, at any width: an orthogonal matrix keeps X X^T). To make Sigma_l hit a chosen target, factor the
targets as Sigma_l = L_l L_l^T (Cholesky: lower triangular, hence causal) and take

    A_l = L_l L_{l-1}^{-1}                       (lower triangular; non-negative when the targets' correlations grow)
    A_l = D_l P_l,  D_l = diag(row sums of A_l),  P_l = softmax(Gamma_l) with Gamma_l = log P_l (-inf above the diagonal)

so the layer computes D_l softmax(Q K^T / sqrt(d_k) + Gamma_l) V: the softmax part is a proper attention
matrix at init and the per-position rescaling D_l makes the whole map exactly A_l. The targets:

    U-SPA:  Sigma_l = (1 - rho_l) I + rho_l 1 1^T        (uniform off-diagonal correlation rho_l)
    E-SPA:  Sigma_l[i, j] = exp(-gamma_l |i - j|)         (correlation decaying with distance)

Provenance: the construction above (W^Q = 0, orthogonal values, Cholesky factors of the targets, a positional
bias with a position-dependent rescaling) is the one that paper describes in its section on U-SPA and E-SPA.
Only its abstract could be read in this project's sources (the search corpus held no full text), so the
formulas were re-derived here rather than copied, and no equation numbers are cited. The depth schedules are
sigprop's: both start from the identity kernel (rho_0 = 0, gamma_0 = inf: untouched tokens) and rise
linearly in the neighbour correlation to the knob's value at the last block,

    U-SPA:  rho_l = spa_rho * l / L              E-SPA:  exp(-gamma_l) = exp(-spa_gamma) * l / L.

Both keep A_l non-negative (see `check_nonnegative`), which the Cholesky ratio needs for a softmax.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from sigprop.errors import SigpropError

SPA_ATTENTION = ("u-spa", "e-spa")


def uspa_kernel(rho: float, T: int) -> torch.Tensor:
    """(1 - rho) I + rho 1 1^T in float64."""
    return (1 - rho) * torch.eye(T, dtype=torch.float64) + rho * torch.ones(T, T, dtype=torch.float64)


def espa_kernel(gamma: float, T: int) -> torch.Tensor:
    """exp(-gamma |i - j|) in float64 (gamma = inf gives I)."""
    i = torch.arange(T, dtype=torch.float64)
    dist = (i[:, None] - i[None, :]).abs()
    if math.isinf(gamma):
        return torch.eye(T, dtype=torch.float64)
    return torch.exp(-gamma * dist)


def schedule(attention: str, target: float, layer: int, depth: int) -> float:
    """rho_l (U-SPA) or gamma_l (E-SPA) after `layer` of `depth` blocks (layer 0 = the input: identity kernel)."""
    if attention == "u-spa":
        return target * layer / depth
    if layer == 0:
        return math.inf
    return target + math.log(depth / layer)


def target_kernel(attention: str, target: float, layer: int, depth: int, T: int) -> torch.Tensor:
    """Sigma_l of the schedule, (T, T) float64."""
    value = schedule(attention, target, layer, depth)
    return uspa_kernel(value, T) if attention == "u-spa" else espa_kernel(value, T)


def check_target(attention: str, target: float) -> None:
    """U-SPA's rho_L must be in [0, 1) (a positive-definite target); E-SPA's gamma_L must be positive."""
    if attention == "u-spa" and not 0 <= target < 1:
        raise SigpropError(f"spa_rho must be in [0, 1) (U-SPA's final off-diagonal correlation), got {target!r}")
    if attention == "e-spa" and not target > 0:
        raise SigpropError(f"spa_gamma must be positive (E-SPA's final decay rate), got {target!r}")


@lru_cache(maxsize=256)
def spa_attention(attention: str, target: float, layer: int, depth: int, T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, Gamma, D) for block `layer` (0-based) of `depth`: A = diag(D) softmax(Gamma), all float64.

    A maps the target kernel before the block to the one after it: A Sigma_layer A^T = Sigma_{layer+1}.
    A's top-left t x t block is the matrix for sequences of length t (lower-triangular factors nest).
    """
    check_target(attention, target)
    L_prev = torch.linalg.cholesky(target_kernel(attention, target, layer, depth, T))
    L_next = torch.linalg.cholesky(target_kernel(attention, target, layer + 1, depth, T))
    A = torch.linalg.solve_triangular(L_prev, L_next, upper=False, left=False)  # X L_prev = L_next
    A = check_nonnegative(A.tril())
    D = A.sum(-1)
    P = A / D[:, None]
    gamma = torch.where(P > 0, torch.log(P.clamp_min(1e-300)), torch.full_like(P, -math.inf))
    return A, gamma, D


def check_nonnegative(A: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """A softmax cannot make negative weights: refuse a schedule whose correlations fall with depth."""
    low = float(A.min())
    if low < -tol * float(A.abs().max()):
        raise SigpropError(f"SPA attention has a negative entry ({low:.3g}): the target correlations must not fall with depth")
    return A.clamp_min(0)
