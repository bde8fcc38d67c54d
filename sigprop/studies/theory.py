"""Infinite-width kernel recursions at initialisation: what signal-propagation theory predicts per layer.

For a BlockSpec and an input kernel Sigma_0 = X_0 X_0^T / d (measured on the embeddings of the same batch),
propagate Sigma_l = X_l X_l^T / d through every block in the infinite-width limit. The maps are the modules' own:
every norm, attention, MLP and block carries `kernel` beside its `forward` (`sigprop.blocks`, the neural-tangents stax
idiom), and `propagate` runs them in forward order on the model built on the meta device (no weights drawn), so every
per-layer rule (first-layer norms and values, depth-scaled gains, U-/E-SPA schedules) comes from the model itself.
The pure pieces are `sigprop.kernels.maps` (nonlinearities, norms, linear maps) and `sigprop.kernels.softmax` (how a
softmax with random W^Q enters: exact at W^Q = 0, else sampled Gaussian logits or the small-logit limit C; the
result's notes say which approximation was used).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from sigprop.blocks.model import ModelConfig, Transformer
from sigprop.blocks.norms import LayerNorm, NoNorm, RMSNorm
from sigprop.blocks.spec import BlockSpec
from sigprop.errors import SigpropError
from sigprop.kernels.maps import Kernel
from sigprop.kernels.softmax import SOFTMAX, KernelContext
from sigprop.probes.metrics import KERNEL_METRICS

__all__ = ["SOFTMAX", "TheoryResult", "GradTheoryResult", "model_at_init", "propagate", "propagate_batch", "propagate_grad"]


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


@functools.lru_cache(maxsize=32)
def model_at_init(spec: BlockSpec, cfg: ModelConfig) -> Transformer:
    """The model whose modules' kernel maps theory runs: built on the meta device (shapes and init gains, no weights;
    cached, since a phase diagram asks for the same spec at many depths)."""
    with torch.device("meta"):
        return Transformer(spec, cfg)


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
    K = sigma0.to(torch.float64)
    K = K[None] if K.ndim == 2 else K
    T = K.shape[-1]
    if key_mask is not None and tuple(key_mask.shape) != (K.shape[0], T):
        raise SigpropError(f"key_mask must have shape (B, T) = ({K.shape[0]}, {T}), got {tuple(key_mask.shape)}")
    ctx = KernelContext(T, cfg.causal, cfg.width, softmax, samples, seed, key_mask=key_mask)  # checks `softmax`
    kernels = model_at_init(spec, cfg).kernels(K, ctx)
    return TheoryResult(spec=spec, kernels=kernels, notes=ctx.notes, key_mask=key_mask, entropy=ctx.entropy)


def propagate_batch(spec: BlockSpec, cfg: ModelConfig, x0: torch.Tensor, softmax: str = "sampled", samples: int = 8,
                    seed: int = 0) -> TheoryResult:
    """The joint kernel of every token of a batch, layers 0..L: Sigma over all B*T tokens (pairs across sequences
    too), from the embeddings x0 (B, T, d). This is what the outlier probes' `batch_corr_*` see (`batch_corr_of_kernel`).

    Attention mixes tokens within a sequence only, so the joint attention matrix is block-diagonal: exact for W^Q = 0
    (each block is shape(C)); with random W^Q each sequence's softmax is sampled from its own diagonal block of the
    kernel, and E[A_b N_bc A_c^T] pairs the draws of the two sequences (the same sample index: the same weights).
    MLPs and norms act on the joint kernel entrywise, as on one sequence's (`KernelContext.joint`).
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim != 3:
        raise SigpropError(f"x0 must be embeddings of shape (B, T, d), got {getattr(x0, 'shape', type(x0).__name__)}")
    B, T, d = x0.shape
    ctx = KernelContext(T, cfg.causal, cfg.width, softmax, samples, seed, joint=B)  # checks `softmax` first
    flat = x0.reshape(B * T, d).to(torch.float64)
    kernels = model_at_init(spec, cfg).kernels((flat @ flat.T / d)[None], ctx)
    return TheoryResult(spec=spec, kernels=kernels, notes=ctx.notes, entropy=ctx.entropy)


# ---------------------------------------------------------------------------------------------------
# Backward: gradient kernels, exact at W^Q = 0
# ---------------------------------------------------------------------------------------------------
#
# With W^Q = 0 the attention matrix is a constant A0 = shape(C) (identity for shaped attention; U-/E-SPA's fixed
# D_l softmax(Gamma_l)) and
# carries no gradient into X (dlogits/dX = 0), so every block is a fixed linear token mixing followed
# by per-token maps. Gradient kernels G = g g^T / d then propagate backward like the forward kernels,
# with the derivative kernel E[phi'(u) phi'(u')] in place of the activation kernel (gradient
# independence; norms act as 1/rms, their projection terms are O(1/d)). Weight gradients follow exactly:
# ||dL/dW||_F^2 = sum_tt' (x_t . x_t')(g_t . g_t'), so the batch is one joint kernel over all B*T tokens.


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



def _check_grad_exact(spec: BlockSpec, model: Transformer) -> None:
    skip = spec.alpha_comb if spec.parallel else spec.alpha_sa
    identity_vp = any(b.attn.linear_map().deterministic is not None for b in model.blocks)
    norms = all(isinstance(n, (NoNorm, RMSNorm, LayerNorm)) for b in model.blocks for n in (b.ln_1, b.ln_2) if n is not None)
    plain = spec.attn_gate == "none" and spec.value_residual is None
    if spec.query_std != 0 or spec.norm_position != "pre" or (skip != 0 and identity_vp) or not norms or not plain:
        raise SigpropError(
            f"the gradient theory is exact only for pre-norm blocks (RMS/Layer norm or none) with W^Q = 0, no gate or value "
            f"residual, and no skip beside identity values (e.g. sas, sas-p, v-skipinit); {spec.name!r} has "
            f"query_init={spec.query_init}, norm={spec.norm!r}, norm_position={spec.norm_position!r}"
        )


def propagate_grad(spec: BlockSpec, cfg: ModelConfig, x0: torch.Tensor, grad_top: torch.Tensor, nodes: int = 24) -> GradTheoryResult:
    """Gradient kernels for layers L..0 from the measured embeddings x0 (B, T, d) and the measured dL/dX_L (B, T, d) at
    the top of the stack, for a W^Q = 0 spec (see `_check_grad_exact`), through the modules' own maps. `nodes` is unused
    (the activation maps pick their own rules), kept for callers."""
    model = model_at_init(spec, cfg)
    _check_grad_exact(spec, model)
    B, T, d = x0.shape
    flat = lambda x: x.reshape(B * T, -1).to(torch.float64)  # noqa: E731
    K = flat(x0) @ flat(x0).T / d
    ctx = KernelContext(T, cfg.causal, cfg.width)  # W^Q = 0: each block's attention matrix is fixed (no draws)

    # Forward: keep what each block's backward needs.
    saved = []
    for blk in model.blocks:
        g = blk.init_gains
        A = torch.block_diag(*[blk.attn.matrix_draws(None, ctx)[0, 0]] * B)  # shaped C, or U-/E-SPA's D_l softmax(Gamma_l)
        vp = blk.attn.linear_map().scale
        N1, inv1 = blk.ln_1.kernel(K)
        attn = g["beta_sa"] ** 2 * vp * A @ N1 @ A.T
        if spec.parallel:
            saved.append((blk, A, vp, N1, inv1, None, None))
            K = g["alpha_comb"] ** 2 * K + attn + g["beta_ff"] ** 2 * blk.mlp.kernel(N1)
            continue
        mid = g["alpha_sa"] ** 2 * K + attn
        N2, inv2 = blk.ln_2.kernel(mid)
        saved.append((blk, A, vp, N1, inv1, N2, inv2))
        K = g["alpha_ff"] ** 2 * mid + g["beta_ff"] ** 2 * blk.mlp.kernel(N2)

    # Backward from the measured top gradient.
    G = flat(grad_top) @ flat(grad_top).T / d
    grads, mlp_norms = [G], []
    outer = lambda inv: inv[:, None] * inv[None, :]  # noqa: E731
    for blk, A, vp, N1, inv1, N2, inv2 in reversed(saved):
        g = blk.init_gains
        if spec.parallel:
            G_mlp, sq = blk.mlp.kernel_backward(N1, g["beta_ff"] ** 2 * G)
            G_attn = g["beta_sa"] ** 2 * vp * A.T @ G @ A
            G = g["alpha_comb"] ** 2 * G + (G_mlp + G_attn) * outer(inv1)
        else:
            G_mlp, sq = blk.mlp.kernel_backward(N2, g["beta_ff"] ** 2 * G)
            G_mid = g["alpha_ff"] ** 2 * G + G_mlp * outer(inv2)
            G = g["alpha_sa"] ** 2 * G_mid + g["beta_sa"] ** 2 * vp * (A.T @ G_mid @ A) * outer(inv1)
        mlp_norms.append(math.sqrt(sq))
        grads.append(G)
    return GradTheoryResult(spec, d, grads[::-1], mlp_norms[::-1])
