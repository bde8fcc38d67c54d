"""Multi-head attention for every variant: softmax (Eq. 2-3), value-skipinit (Eq. 4), shaped (Eq. 5).

Two paths compute the same thing:
- fast: never forms a per-batch T x T matrix.
    shaped:  (alpha I + beta softmax(QK^T) - gamma C) V = alpha V + beta SDPA(Q,K,V) - gamma C V
    where C V is the causal running mean of V (decoder; a GEMM with the constant (T, T) matrix C for short T)
    or the mean over non-padding tokens (encoder). How that mix is computed is `Attention.impl`
    (`sigprop.blocks.fused`): today's torch ops on CPU, one Triton kernel forward and backward on CUDA.
- explicit: builds the full attention matrix and passes it through `hook_matrix` (its softmax part through
  `hook_pattern`), for probes.
U-SPA / E-SPA (`sigprop.blocks.spa`) add a fixed positional bias Gamma_l to the logits and rescale each
position's output by D_l: D_l SDPA(Q, K, V; bias Gamma_l), again without forming the T x T matrix.
QK-norm (the OP block, He et al. 2024) normalises each head's queries and keys before the logits: SDPA still
applies. A logit soft-cap c tanh(logits / c) has no SDPA form: the fast path then computes the softmax
explicitly (the same arithmetic as the explicit path, without the hook points).

`Attention.kernel` is the module's kernel map at init, beside its forward: A N A^T for the attention matrix A
(exact when W^Q = 0: then A is shaped C), through the value/projection maps (`kernel_map` of each matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from sigprop.blocks.fused import FUSING, autocast_input, mix_compiled, mix_fused, resolve_impl
from sigprop.blocks.spa import SPA_ATTENTION, spa_attention
from sigprop.blocks.spec import BlockSpec
from sigprop.errors import SigpropError
from sigprop.kernels.maps import IDENTITY, Kernel, LinearMap, gate_kernel
from sigprop.kernels.softmax import centring_matrix


class HookPoint(nn.Identity):
    """A named no-op that probes hook into (as in TransformerLens)."""


def gain(value: float, trainable: bool, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """A scalar (or per-head) gain: an nn.Parameter when trainable, else a fixed tensor."""
    t = torch.full(shape, float(value))
    return nn.Parameter(t) if trainable else t


#: Up to this T the decoder's running mean C V is one small GEMM with the constant (T, T) matrix C: 2 T d FLOPs per
#: token, no more than a d x d linear layer at T <= d, and on CPU ~3x faster than a cumsum and its reverse-cumsum
#: backward at T = 128 (benchmarks/README.md). Longer sequences use the cumsum, which never forms T x T.
RUNNING_MEAN_GEMM_MAX_T = 256


def centred_values(v: torch.Tensor, causal: bool, key_mask: torch.Tensor | None) -> torch.Tensor:
    """C V without a (B, T, T) tensor. v: (B, T, c) tokens on dim 1; key_mask: (B, T), True = real token."""
    T = v.shape[1]
    if causal:
        if T <= RUNNING_MEAN_GEMM_MAX_T:
            return torch.matmul(centring_matrix(T, True, dtype=v.dtype, device=v.device), v)
        counts = torch.arange(1, T + 1, device=v.device, dtype=v.dtype)[:, None]
        return v.cumsum(dim=1) / counts
    if key_mask is None:
        return v.mean(dim=1, keepdim=True).expand_as(v)
    m = key_mask[:, :, None].to(v.dtype)  # (B, T, 1)
    return ((v * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)).expand_as(v)


#: Up to this sequence length the CPU SDPA kernel runs in fp32 under bf16/fp16 (see `sdpa`).
CPU_FP32_SDPA_MAX_T = 128


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
    """softmax(Q K^T / sqrt(dh) + mask) V via F.scaled_dot_product_attention (never forms T x T).

    On CPU, for short sequences (T <= CPU_FP32_SDPA_MAX_T), the fused kernel runs in fp32 even under
    bf16/fp16 autocast: there its low-precision kernel is 1.2-1.5x slower than fp32 for forward +
    backward, while from T = 256 on bf16 ties or wins (benchmarks/sdpa_dtype.py). The result is cast
    back to the dtype autocast would have given, so callers see the same dtypes either way.
    """
    low = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    half = (torch.bfloat16, torch.float16)
    short_cpu = q.device.type == "cpu" and q.shape[-2] <= CPU_FP32_SDPA_MAX_T
    if not short_cpu or not (low in half or {q.dtype, k.dtype, v.dtype} & set(half)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    with torch.autocast("cpu", enabled=False):
        if attn_mask is not None and attn_mask.is_floating_point():  # an additive bias (U-/E-SPA) follows q to fp32
            attn_mask = attn_mask.float()
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask, is_causal=is_causal)
    return y.to(low)


def draw_(init_: Callable[..., torch.Tensor], w: torch.Tensor, **kw: object) -> None:
    """Initialise `w` in place with an nn.init function, except on the meta device: there are no values to draw, and
    drawing there runs torch's Python reference ops, whose first use imports torch._dynamo (seconds on 2 cores)."""
    if not w.is_meta:
        init_(w, **kw)


def normal_linear(fan_in: int, fan_out: int, std: float) -> nn.Linear:
    """A bias-free Linear drawn once from N(0, std^2) (zeros when std = 0), skipping nn.Linear's own init."""
    lin = skip_init(nn.Linear, fan_in, fan_out, bias=False, device=torch.get_default_device())
    if std > 0:
        draw_(nn.init.normal_, lin.weight, std=std)
    else:
        nn.init.zeros_(lin.weight)
    return lin


class DenseMatrix(nn.Module):
    """A trainable d x d matrix, initialised normal(init_std) or orthogonal."""

    def __init__(self, d: int, init: str, std: float):
        super().__init__()
        self.init, self.std = init, std
        self.weight = nn.Parameter(torch.empty(d, d))
        if init == "orthogonal":
            draw_(nn.init.orthogonal_, self.weight)
        else:
            draw_(nn.init.normal_, self.weight, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    def kernel_map(self) -> LinearMap:
        """Orthogonal keeps the kernel; N(0, std^2) entries scale it by std^2 d; either decorrelates (zero mean)."""
        d = self.weight.shape[0]
        return LinearMap(1.0, None) if self.init == "orthogonal" else LinearMap(self.std**2 * d, None)


class ReparamMatrix(nn.Module):
    """Eq. 6: W = alpha W_init + beta dW, W_init fixed (identity or orthogonal), dW trainable, zero init."""

    def __init__(self, d: int, init: str, alpha: float, beta: float, trainable_gains: bool):
        super().__init__()
        self.alpha0 = float(alpha)
        self.identity_init = init == "identity"
        if not self.identity_init:
            w = torch.empty(d, d)
            draw_(nn.init.orthogonal_, w)
            self.register_buffer("w_init", w)
        self.delta = nn.Parameter(torch.zeros(d, d))
        a, b = gain(alpha, trainable_gains), gain(beta, trainable_gains)
        if trainable_gains:
            self.alpha, self.beta = a, b
        else:
            self.register_buffer("alpha", a)
            self.register_buffer("beta", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x if self.identity_init else x @ self.w_init
        return self.alpha * base + self.beta * (x @ self.delta)

    def kernel_map(self) -> LinearMap:
        """At init W = alpha W_init (dW = 0): the kernel times alpha^2; exactly alpha I when W_init = I."""
        return LinearMap(self.alpha0**2, self.alpha0 if self.identity_init else None)

    @property
    def weight(self) -> torch.Tensor:
        w0 = torch.eye(self.delta.shape[0], device=self.delta.device) if self.identity_init else self.w_init
        return self.alpha * w0 + self.beta * self.delta


def init_matrix(m: nn.Module) -> torch.Tensor:
    """The fixed-at-init d x d matrix of a value/projection: W_init of Eq. 6, or a dense matrix's weight."""
    return m.w_init if isinstance(m, ReparamMatrix) else m.weight


@torch.no_grad()
def tie_valproj_init(pairs: list[tuple[nn.Module, nn.Module]], mode: str) -> None:
    """App. C (Fig. 15): tie the orthogonal (W^V_init, W^P_init) of every block so that the attention sub-blocks'
    linear maps compose to the identity at init, prod_l W^V_l W^P_l = I. all_blocks: W^P_init,l = (W^V_init,l)^T
    in each block. last_block ("LL-tied"): independent draws except the last projection,
    (W^P_init,L)^T = (prod_{l<L} W^V_init,l W^P_init,l) W^V_init,L."""
    if mode == "none" or not pairs or init_matrix(pairs[0][0]).is_meta:
        return
    if mode == "all_blocks":
        for v, p in pairs:
            init_matrix(p).copy_(init_matrix(v).T)
        return
    prod = torch.eye(init_matrix(pairs[0][0]).shape[0], dtype=init_matrix(pairs[0][0]).dtype)
    for v, p in pairs[:-1]:
        prod = prod @ init_matrix(v) @ init_matrix(p)
    v, p = pairs[-1]
    init_matrix(p).copy_((prod @ init_matrix(v)).T)


def make_matrix(kind: str, init: str, alpha: float, beta: float, d: int, spec: BlockSpec, gains: str) -> nn.Module | None:
    """dense | identity (None: no matmul at all) | reparam."""
    if kind == "identity":
        return None
    if kind == "dense":
        return DenseMatrix(d, init, spec.init_std)
    return ReparamMatrix(d, init, alpha, beta, spec.is_trainable(gains))


class Attention(nn.Module):
    """Multi-head self-attention with the paper's attention-matrix and value/projection options."""

    def __init__(self, spec: BlockSpec, width: int, heads: int, causal: bool, layer: int = 0, depth: int | None = None):
        super().__init__()
        self.spec, self.width, self.heads, self.causal = spec, width, heads, causal
        self.spa = spec.attention in SPA_ATTENTION
        if self.spa and depth is None:
            raise SigpropError(f"attention={spec.attention!r} follows a depth schedule; build it with depth=")
        self.layer, self.depth = layer, depth
        self.head_dim = width // heads
        self.w_q = normal_linear(width, width, spec.query_std)
        self.w_k = normal_linear(width, width, spec.init_std)

        if layer == 0 and spec.first_layer_value and spec.value == "identity":
            # SAS footnote 6: the first block keeps W^V = alpha_v I + beta_v dW with trainable gains 1, 1.
            self.value = ReparamMatrix(width, "identity", 1.0, 1.0, spec.is_trainable("value"))
        else:
            self.value = make_matrix(spec.value, spec.value_init, spec.alpha_v, spec.beta_v, width, spec, "value")
        self.proj = make_matrix(spec.proj, spec.proj_init, spec.alpha_p, spec.beta_p, width, spec, "proj")

        shaped = spec.attention in ("shaped", "value_skipinit")
        if shaped:
            shape = (heads,) if spec.per_head_gains else ()
            train = spec.is_trainable("attn")
            for name, v in (("alpha", spec.alpha), ("beta", spec.beta), ("gamma", spec.gamma)):
                if name == "gamma" and spec.attention != "shaped":
                    continue
                g = gain(v, train, shape)
                if train:
                    setattr(self, name, g)
                else:
                    self.register_buffer(name, g)
        # OP block: per-head RMSNorm/LayerNorm over head_dim on queries and keys, one learnable scale per channel
        # (shared by the heads), as the sequel's `q_norm`, `k_norm`
        self.q_norm = self.k_norm = None
        if spec.qk_norm != "none":
            norm = nn.RMSNorm if spec.qk_norm == "rms" else nn.LayerNorm
            self.q_norm, self.k_norm = norm(self.head_dim, eps=spec.norm_eps), norm(self.head_dim, eps=spec.norm_eps)
        # gated attention: sigmoid(X W_theta) on the SDPA output, one gate per channel or per head
        self.w_gate = None
        if spec.attn_gate != "none":
            self.w_gate = normal_linear(width, width if spec.attn_gate == "sigmoid" else heads, spec.init_std)
        self.first_values: torch.Tensor | None = None  # value residual: block 1's values, read by the model's forward
        self.explicit = False  # set by probes: build the T x T matrix and pass it through the hook points
        self.impl = "auto"  # how the fast path computes the shaped mix: sigprop.blocks.fused.IMPLS (set_attn_impl)
        self.hook_pattern = HookPoint()  # (B, H, T, T) softmax probabilities A(X), explicit path only
        self.hook_matrix = HookPoint()  # (B, H, T, T) the full (shaped) attention matrix, explicit path only

    # -- helpers ------------------------------------------------------------------------------------
    def _head_gain(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        g = getattr(self, name, None)
        if g is None:
            return None
        g = g.to(like.dtype)
        return g.view(1, -1, 1, 1) if g.ndim == 1 else g

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    # -- forward ------------------------------------------------------------------------------------
    def mix_impl(self, device: torch.device) -> str | None:
        """How this forward computes the shaped mix (`sigprop.blocks.fused`): "sdpa" | "fused" | "compile", or None
        where there is no fast-path mix (softmax attention, U-/E-SPA, the explicit path, a logit soft-cap)."""
        if self.spec.attention not in ("shaped", "value_skipinit") or self.explicit or self.spec.logit_softcap is not None:
            return None
        return resolve_impl(self.impl, device)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, v1: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d); key_mask: (B, T) bool, True = real token (encoder padding); v1: block 1's values (value residual);
        scale: a gain on the output (the block's beta_sa), folded into the fused mix where nothing follows it."""
        B, T, d = x.shape
        mix = self.mix_impl(x.device)
        if mix in FUSING:  # under autocast one low-precision copy of x for every reader
            x = autocast_input(x)
        q, k = self._split(self.w_q(x)), self._split(self.w_k(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q.float()).to(q.dtype), self.k_norm(k.float()).to(k.dtype)  # fp32 norms under autocast
        values = self.value(x) if self.value is not None else x  # (B, T, d)
        lam = self.spec.value_residual
        if lam is not None:  # ResFormer: V_l <- lambda V_l + (1 - lambda) V_1
            if self.layer == 0:
                self.first_values = values
            elif v1 is not None:
                values = lam * values + (1 - lam) * v1.to(values.dtype)
        if mix in FUSING:
            values = autocast_input(values)  # SDPA reads (and saves) this copy; so does the fused mix
        v = self._split(values)
        folded = mix in FUSING and self.proj is None and self.w_gate is None
        if self.explicit or self.spec.logit_softcap is not None:
            y = self._merge(self._explicit(q, k, v, key_mask))
        elif self.spa:
            y = self._merge(self._spa_fast(q, k, v, key_mask))
        else:
            y = self._fast(q, k, v, values, key_mask, mix, scale if folded else None)
        if self.w_gate is not None:
            g = torch.sigmoid(self.w_gate(x))
            y = y * (g if g.shape[-1] == d else g.repeat_interleave(self.head_dim, dim=-1))
        y = self.proj(y) if self.proj is not None else y
        return scale.to(y.dtype) * y if scale is not None and not folded else y

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, dh) -> (B, T, d): the heads side by side again."""
        B, H, T, dh = y.shape
        return y.transpose(1, 2).reshape(B, T, H * dh)

    def _channel_gain(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        """A gain per channel of the (B, T, d) layout in like's dtype: each head's gain over its head_dim channels."""
        g = getattr(self, name, None)
        if g is None:
            return None
        g = g.to(like.dtype)
        return g if g.ndim == 0 else g.repeat_interleave(self.head_dim)

    def _fast(self, q, k, v, values, key_mask, mix: str | None = None, scale: torch.Tensor | None = None):
        mask = None if key_mask is None else key_mask[:, None, None, :]
        causal = self.causal and mask is None
        if mask is not None and self.causal:
            mask = mask & torch.ones(q.shape[-2], q.shape[-2], dtype=torch.bool, device=q.device).tril()
        y = self._merge(sdpa(q, k, v, attn_mask=mask, is_causal=causal))
        if self.spec.attention == "softmax":
            return y
        if mix in FUSING:  # one kernel (or one Inductor graph), the block's gain folded in
            gamma = self.gamma if self.spec.attention == "shaped" else None
            fn = mix_fused if mix == "fused" else mix_compiled
            return fn(values, y, self.alpha, self.beta, gamma, scale, self.causal, key_mask, self.heads)
        # alpha V + beta SDPA - gamma C V in the (B, T, d) layout, two fused multiply-adds (addcmul) with gains per
        # channel; C V is the causal running mean (a small GEMM up to RUNNING_MEAN_GEMM_MAX_T) or the masked mean
        gain = {n: self._channel_gain(n, values) for n in ("alpha", "beta", "gamma")}
        y = torch.addcmul(gain["alpha"] * values, gain["beta"], y)
        if self.spec.attention == "shaped":
            y = torch.addcmul(y, gain["gamma"], centred_values(values, self.causal, key_mask), value=-1)
        return y

    def spa_bias(self, T: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Gamma_l (T, T) with -inf above the diagonal, D_l as (T, 1)) in like's dtype and device."""
        spec = self.spec
        target = spec.spa_rho if spec.attention == "u-spa" else spec.spa_gamma
        _, gamma, D = spa_attention(spec.attention, target, self.layer, self.depth, T)
        return gamma.to(like.device, like.dtype), D[:, None].to(like.device, like.dtype)

    def _spa_fast(self, q, k, v, key_mask):
        """D_l softmax(QK^T / sqrt(d_k) + Gamma_l) V through SDPA's additive mask (Gamma_l already holds the causal -inf)."""
        T = q.shape[-2]
        bias, D = self.spa_bias(T, q)
        if key_mask is not None:
            bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return D * sdpa(q, k, v, attn_mask=bias.to(q.dtype))

    def attention_matrix(self, q, k, key_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(full attention matrix, softmax part), each (B, H, T, T)."""
        T = q.shape[-2]
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        if self.spec.logit_softcap is not None:  # the sequel's `dot_norm_type: tanh`: |logits| < c
            c = self.spec.logit_softcap
            logits = c * torch.tanh(logits / c)
        if self.spa:
            bias, D = self.spa_bias(T, logits)
            if key_mask is not None:
                bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))
            A = torch.softmax(logits + bias, dim=-1)
            return D * A, A
        allowed = torch.ones(T, T, dtype=torch.bool, device=q.device)
        if self.causal:
            allowed = allowed.tril()
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]
        A = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        if self.spec.attention == "softmax":
            return A, A
        full = self._head_gain("beta", q) * A
        if self.spec.attention == "shaped":
            # beta A - gamma C first: it is exactly 0 at init (beta = gamma, A = C), so the result is exactly I.
            C = centring_matrix(T, self.causal, key_mask if not self.causal else None, dtype=q.dtype, device=q.device)
            full = full - self._head_gain("gamma", q) * C
        eye = torch.eye(T, dtype=q.dtype, device=q.device)
        return full + self._head_gain("alpha", q) * eye, A

    def _explicit(self, q, k, v, key_mask):
        full, A = self.attention_matrix(q, k, key_mask)
        if self.explicit:  # a soft-capped fast path comes here too, but only probes want the hook points
            self.hook_pattern(A)
            full = self.hook_matrix(full)
        return full @ v

    # -- kernel map at init (theory beside forward) ---------------------------------------------------
    def linear_map(self) -> LinearMap:
        """What values then projection do to kernels at init (no matrix: the identity)."""
        value = self.value.kernel_map() if self.value is not None else IDENTITY
        return value.then(self.proj.kernel_map() if self.proj is not None else IDENTITY)

    def logit_std(self) -> float:
        """The std of a logit between unit-norm tokens at init: std(W^Q) std(W^K) d, or 1 under QK-norm (unit-RMS heads)."""
        q_std = self.spec.query_std
        if self.q_norm is not None:
            return 1.0 if q_std > 0 else 0.0
        return q_std * self.spec.init_std * self.width

    def shape(self, S: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Eq. 4/5 on softmax matrices S (any leading dims), with the gains at init: alpha I + beta S - gamma C."""
        spec = self.spec
        if spec.attention == "softmax":
            return S
        gamma = spec.gamma if spec.attention == "shaped" else 0.0
        return (spec.beta * S - gamma * C) + spec.alpha * torch.eye(S.shape[-1], dtype=S.dtype)

    def matrix_draws(self, N: Kernel, ctx) -> torch.Tensor:
        """(draws, B|1, T, T) attention matrices at init for input kernel N: U-/E-SPA's fixed D_l softmax(Gamma_l), else
        the shaped softmax of `ctx`'s logits (exactly C at W^Q = 0; sampled Gaussian logits or C otherwise)."""
        if self.spa:
            target = self.spec.spa_rho if self.spec.attention == "u-spa" else self.spec.spa_gamma
            if self.spec.query_std != 0:
                ctx.note(f"random W^Q (std {self.spec.query_std}) around the {self.spec.attention} bias replaced by W^Q = 0")
            return ctx.fixed(spa_attention(self.spec.attention, target, self.layer, self.depth, ctx.T)[0])
        return self.shape(ctx.softmax_draws(N, self.spec, self.layer, self.logit_std()), ctx.C)

    def kernel(self, N: Kernel, X: Kernel, c: torch.Tensor, ctx) -> tuple[Kernel, Kernel | float]:
        """(kernel of this branch's output, R_ij = E[x_i . out_j] / d) for normalised input kernel N, the stream's kernel X
        and c of the norm between them. The cross term survives only through identity values/projections (zero-mean
        random ones decorrelate it); a sigmoid gate multiplies the kernel by E[sigmoid(g_i) sigmoid(g_j)] and the cross
        term by E[sigmoid(g)] = 1/2 (independent weights). Value residual: lambda^2 V_l + (1 - lambda)^2 V_1 (independent
        dense W^V, no cross term); `ctx.state` carries block 1's values."""
        V = N
        lam = self.spec.value_residual
        if lam is not None:
            ctx.state.setdefault("v1", N)
            V = N if self.layer == 0 else lam**2 * N + (1 - lam) ** 2 * ctx.state["v1"]
        ANA, A = ctx.mix(self.matrix_draws(N, ctx), V)
        gate = gate_kernel(N, self.spec.init_std, self.width) if self.w_gate is not None else None
        vp = self.linear_map()
        branch = vp.scale * (ANA if gate is None else ANA * gate)
        if vp.deterministic is None:
            return branch, 0.0
        XN = X * c[..., None, :]  # E[x_i . norm(x)_j] / d
        return branch, vp.deterministic * (XN @ A.transpose(-1, -2)) * (0.5 if gate is not None else 1.0)
