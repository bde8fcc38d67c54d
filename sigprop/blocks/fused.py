"""How shaped attention computes its mix alpha V + beta SDPA - gamma C V: the implementation choice (issue 30).

On a GPU the mix is memory-bound: as torch ops it is several elementwise passes forward (more backward, with the
gains' reductions) over the (B, T, d) stream, each about as slow as a d x d matmul over the same tokens; SAS and SAS-P
ran at 0.7-0.8x Pre-LN on an H200 (benchmarks/README.md). Implementations (`attn_impl`):

- "sdpa": today's torch ops (two addcmul, C V as a small GEMM up to T = 256, else a cumsum); the CPU default, where
  the mix is 1-2% of a step and every committed CPU result was made with it.
- "fused": one Triton kernel forward and one backward (`sigprop.blocks.triton_mix`); the gains' gradients come from
  per-sequence partial sums in the same backward pass; the block's beta_sa is folded into the kernel and its beta_ff
  into W_out (`Block`), so nothing multiplies a (B, T, d) branch output again; under autocast V enters in the autocast
  dtype (the copy SDPA reads and saves, so backward saves nothing new) and the output is in that dtype too, like a
  projection's.
- "compile": the same arithmetic as torch ops in cumsum form, through torch.compile (Inductor fuses it).
- "auto" (default): inside torch.compile the torch ops in cumsum form (Inductor fuses them with the rest of the
  model); else $SIGPROP_ATTN_IMPL if set; else "fused" on CUDA when triton is installed; else "sdpa".

On CPU tensors "fused" runs the kernels in Triton's interpreter (numpy): correct but slow, for tests only.
"""

from __future__ import annotations

import functools
import os
import sys

import torch
from torch import nn

from sigprop.blocks import triton_mix
from sigprop.errors import SigpropError, check_choice

IMPLS = ("auto", "sdpa", "fused", "compile")
#: The implementations that fuse the mix: they read V in the autocast dtype and fold the block's beta_sa in.
FUSING = ("fused", "compile")
ENV = "SIGPROP_ATTN_IMPL"
#: Tile sizes: BLOCK_C channels (contiguous in memory) by BLOCK_T tokens per program step.
BLOCK_T, BLOCK_C = 32, 64


@functools.cache
def triton_available() -> bool:
    """Whether triton imports (it ships with CUDA builds of torch; `pip install 'sigprop[gpu]'` elsewhere)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install without a driver
        return False
    return True


def check_impl(impl: str) -> str:
    check_choice("attn_impl", impl, IMPLS)
    return impl


def resolve_impl(impl: str, device: torch.device) -> str:
    """The implementation `impl` means on `device`: "auto" becomes "sdpa", "fused" or "compile" (see the module doc)."""
    if impl != "auto":
        return impl
    if torch.compiler.is_compiling():  # first: no environment lookup for dynamo to trace
        return "compile"
    env = os.environ.get(ENV, "").strip()
    if env and env != "auto":
        check_choice(f"${ENV}", env, IMPLS)
        return env
    return "fused" if device.type == "cuda" and triton_available() else "sdpa"


def set_attn_impl(model: nn.Module, impl: str) -> nn.Module:
    """Set how every sigprop attention module in `model` (those with `mix_impl`) computes the shaped mix."""
    check_impl(impl)
    for m in model.modules():
        if hasattr(m, "mix_impl"):
            m.impl = impl
    return model


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype where autocast is on for its device: one copy, shared by every matmul that reads x (each
    would otherwise cast, and save, its own) and by the fused mix."""
    dev = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return x.to(torch.get_autocast_dtype(dev))
    return x


# ------------------------------------------------------------------------------------------------
# The torch-ops form ("compile", and the reference of the tests)
# ------------------------------------------------------------------------------------------------


def _per_channel(g: torch.Tensor, heads: int, d: int) -> torch.Tensor:
    g = g.float()
    return g if g.ndim == 0 else g.repeat_interleave(d // heads)


def mix_torch(v: torch.Tensor, s: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None,
              scale: torch.Tensor | None, causal: bool, key_mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """scale (alpha V + beta S - gamma C V) on the (B, T, d) layout, as torch ops: the fused kernel's arithmetic (fp32
    inside, the result in the dtype v and s promote to). Gains scalar or per head (H,); C V the causal running mean
    (a cumsum, which Inductor fuses) or the (masked) mean over the sequence."""
    d = v.shape[-1]
    out_dtype = torch.promote_types(v.dtype, s.dtype)
    v32, s32 = v.float(), s.float()
    y = _per_channel(alpha, heads, d) * v32 + _per_channel(beta, heads, d) * s32
    if gamma is not None:
        if causal:
            cv = v32.cumsum(1) / torch.arange(1, v.shape[1] + 1, device=v.device, dtype=torch.float32)[:, None]
        elif key_mask is None:
            cv = v32.mean(1, keepdim=True)
        else:
            m = key_mask[:, :, None].float()
            cv = (v32 * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        y = y - _per_channel(gamma, heads, d) * cv
    if scale is not None:
        y = scale.float() * y
    return y.to(out_dtype)


@functools.cache
def _compiled():
    return torch.compile(mix_torch, dynamic=False)


def mix_compiled(*args, **kw) -> torch.Tensor:
    """mix_torch through torch.compile (inline when already inside a compiled model)."""
    if torch.compiler.is_compiling():
        return mix_torch(*args, **kw)
    return _compiled()(*args, **kw)


# ------------------------------------------------------------------------------------------------
# The fused form: Triton forward and backward
# ------------------------------------------------------------------------------------------------


def _gain_arg(g: torch.Tensor, heads: int) -> tuple[torch.Tensor, int]:
    """A gain as the kernel reads it: fp32, contiguous; stride 1 over heads, or 0 for a scalar shared by all."""
    g = g.detach().float().reshape(-1).contiguous()
    if g.numel() not in (1, heads):
        raise SigpropError(f"a shaped-attention gain has {g.numel()} values; expected 1 or one per head ({heads})")
    return g, int(g.numel() == heads and heads > 1)


class _FusedMix(torch.autograd.Function):
    """out = scale (alpha v + beta s - gamma C v) with a Triton forward and backward; saves only v and s (for the
    gains' gradients, and only where a gain needs them), never C v or the output."""

    @staticmethod
    def forward(ctx, v, s, alpha, beta, gamma, scale, key_mask, causal, heads, out_dtype):
        B, T, D = v.shape
        v, s = v.contiguous(), s.contiguous()
        (a, a_st), (b, b_st) = _gain_arg(alpha, heads), _gain_arg(beta, heads)
        g, g_st = _gain_arg(gamma, heads) if gamma is not None else (a, 0)
        sc = scale.detach().float().reshape(1) if scale is not None else a
        m = key_mask.to(torch.float32).contiguous() if key_mask is not None and not causal else a
        out = torch.empty((B, T, D), dtype=out_dtype, device=v.device)
        fwd, _ = triton_mix.kernels(v.device.type)
        grid = (B, triton_cdiv(D, BLOCK_C))
        fwd[grid](v, s, out, a, b, g, sc, m, T, D, D // heads, v.stride(0), v.stride(1), s.stride(0), s.stride(1),
                  out.stride(0), out.stride(1), a_st, b_st, g_st, CAUSAL=causal, HAS_G=gamma is not None,
                  HAS_SC=scale is not None, HAS_M=key_mask is not None and not causal, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        gains = (alpha, beta, gamma, scale)
        need = [x is not None and x.requires_grad for x in gains]
        ctx.need_v = need[0] or need[2] or need[3]  # alpha, gamma, scale read sum G v and sum G C v
        ctx.need_s = need[1] or need[3]
        ctx.causal, ctx.heads, ctx.has_gamma, ctx.has_scale = causal, heads, gamma is not None, scale is not None
        ctx.has_mask = key_mask is not None and not causal
        ctx.save_for_backward(v if ctx.need_v else None, s if ctx.need_s else None, a, b, g, sc, m,
                              *(x if x is not None else a for x in gains))
        ctx.dtypes = (v.dtype, s.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        v, s, a, b, g, sc, m, alpha, beta, gamma, scale = ctx.saved_tensors
        go = grad_out.contiguous()
        B, T, D = go.shape
        H = ctx.heads
        want_dv, want_ds = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dv = torch.empty((B, T, D), dtype=ctx.dtypes[0], device=go.device) if want_dv else go
        ds = torch.empty((B, T, D), dtype=ctx.dtypes[1], device=go.device) if want_ds else go
        parts = torch.zeros((3, B, D), dtype=torch.float32, device=go.device)
        vv, ss = (v if v is not None else go), (s if s is not None else go)
        _, bwd = triton_mix.kernels(go.device.type)
        bwd[(B, triton_cdiv(D, BLOCK_C))](
            go, vv, ss, dv, ds, parts[0], parts[1], parts[2], a, b, g, sc, m, T, D, D // H, go.stride(0), go.stride(1),
            vv.stride(0), vv.stride(1), ss.stride(0), ss.stride(1), int(a.numel() == H and H > 1),
            int(b.numel() == H and H > 1), int(g.numel() == H and H > 1), CAUSAL=ctx.causal, HAS_G=ctx.has_gamma,
            HAS_SC=ctx.has_scale, HAS_M=ctx.has_mask, NEED_V=ctx.need_v, NEED_S=ctx.need_s, WANT_DV=want_dv,
            WANT_DS=want_ds, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        # per-head sums over the batch and each head's channels: A = sum G v, Bs = sum G s, Gm = sum G C v
        A, Bs, Gm = parts.sum(1).view(3, H, D // H).sum(-1)
        k = sc[0] if ctx.has_scale else 1.0

        def per_gain(total: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            out = k * (total if like.numel() == H and H > 1 else total.sum())
            return out.reshape(like.shape).to(like.dtype)

        d_alpha = per_gain(A, alpha) if ctx.needs_input_grad[2] else None
        d_beta = per_gain(Bs, beta) if ctx.needs_input_grad[3] else None
        d_gamma = -per_gain(Gm, gamma) if ctx.has_gamma and ctx.needs_input_grad[4] else None
        d_scale = None
        if ctx.has_scale and ctx.needs_input_grad[5]:
            per_head = lambda x: x if x.numel() == H else x.expand(H)  # noqa: E731
            total = (per_head(a) * A + per_head(b) * Bs - (per_head(g) * Gm if ctx.has_gamma else 0)).sum()
            d_scale = total.reshape(scale.shape).to(scale.dtype)
        return (dv if want_dv else None, ds if want_ds else None, d_alpha, d_beta, d_gamma, d_scale, None, None, None, None)


def triton_cdiv(n: int, k: int) -> int:
    return -(-n // k)


def mix_fused(v: torch.Tensor, s: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None,
              scale: torch.Tensor | None, causal: bool, key_mask: torch.Tensor | None, heads: int,
              out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """mix_torch's result through the Triton kernels; `out_dtype` defaults to what the torch ops promote to."""
    if v.device.type != "cuda" and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU tensors: only the interpreter can run the kernels
    if not triton_available():
        raise SigpropError("attn_impl='fused' needs triton; accepted: install it (pip install 'sigprop[gpu]'), "
                           "or attn_impl 'sdpa' | 'compile' | 'auto'")
    if v.shape != s.shape or v.ndim != 3 or v.shape[-1] % heads:
        raise SigpropError(f"mix_fused needs v and s of one (B, T, d) shape with d divisible by heads, got "
                           f"{tuple(v.shape)}, {tuple(s.shape)}, heads={heads}")
    out_dtype = out_dtype or torch.promote_types(v.dtype, s.dtype)
    return _FusedMix.apply(v, s, alpha, beta, gamma, scale, key_mask, causal, heads, out_dtype)
