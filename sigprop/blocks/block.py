"""One transformer block for every variant: Eq. 1 (sequential) or Eq. 7 (parallel), driven by a BlockSpec.

Each module carries its kernel map at init beside its forward (`kernel`, the neural-tangents stax idiom): the block's
map composes its norms', attention's and MLP's maps in the order its forward calls them, with the gains it was built
with, so theory and model cannot drift apart (`sigprop.studies.theory.propagate` runs the model's maps block by block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sigprop.blocks.attention import Attention, HookPoint, ReparamMatrix, gain, normal_linear
from sigprop.blocks.fused import FUSING, autocast_input
from sigprop.blocks.norms import make_norm
from sigprop.blocks.spec import BlockSpec
from sigprop.kernels.maps import Kernel, activation_kernel, derivative_kernel, normalise, sym


class MLP(nn.Module):
    """Two bias-free linear layers with a pointwise nonlinearity (acts on each token separately)."""

    def __init__(self, spec: BlockSpec, width: int):
        super().__init__()
        hidden = int(round(spec.mlp_mult * width))
        self.w_in = normal_linear(width, hidden, spec.init_std)
        self.w_out = normal_linear(hidden, width, spec.init_std)
        self.activation, self.slope = spec.activation, spec.leaky_slope
        self.std, self.width, self.hidden = spec.init_std, width, hidden
        self.unit_rows = spec.norm_position == "sphere"  # nGPT: weight rows on the unit sphere (Transformer.renormalize_)
        # nGPT's s_v (Sec. 2.4.2): with unit rows and a unit input a pre-activation is a cosine, O(1/sqrt(d)), where GELU
        # (and nGPT's SiLU) is nearly linear; s_v sqrt(d) per hidden unit (init 1) brings it to O(1). With ReLU (the
        # preset's) the scale passes through to a norm that removes it, and s_v is a learnable gain per hidden unit.
        # nGPT's SwiGLU also scales its other input by s_u; this MLP has one input map, so s_v alone.
        self.s_v = nn.Parameter(torch.ones(hidden)) if self.unit_rows else None

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d); scale: a gain on the output (the block's beta_ff), folded into W_out (a d x hidden multiply
        instead of one over the (B, T, d) output, and nothing of that output saved for the gain's gradient)."""
        h = self.w_in(x)
        if self.s_v is not None:
            h = h * (self.s_v * self.width**0.5).to(h.dtype)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "leaky_relu":
            h = F.leaky_relu(h, self.slope)
        elif self.activation == "gelu":
            h = F.gelu(h)
        if scale is not None:
            return F.linear(h, scale * self.w_out.weight)
        return self.w_out(h)

    def kernel(self, K: Kernel) -> Kernel:
        """std^2 hidden E[phi(u) phi(u')], u ~ N(0, std^2 d K); with unit-norm weight rows (nGPT) the pre-activations
        have kernel K itself times s_v^2 d = d at init, and the output scale cancels in the norm that follows."""
        if self.unit_rows:
            return activation_kernel(self.width * K, self.activation, self.slope)
        return self.std**2 * self.hidden * activation_kernel(self.std**2 * self.width * K, self.activation, self.slope)

    def kernel_backward(self, N: Kernel, G_out: Kernel) -> tuple[Kernel, float]:
        """(gradient kernel at the input, ||dL/dW_in||^2 + ||dL/dW_out||^2) for input kernel N and output gradient kernel
        G_out (batch-joint kernels; gradient independence)."""
        std, d, hidden = self.std, self.width, self.hidden
        pre = std**2 * d * N
        Phi = activation_kernel(pre, self.activation, self.slope)
        G_pre = std**2 * d * G_out * derivative_kernel(pre, self.activation, self.slope)
        sq = hidden * d * float((Phi * G_out).sum()) + d * hidden * float((N * G_pre).sum())
        return std**2 * hidden * G_pre, sq


class Block(nn.Module):
    """Eq. 1:  X^ = alpha_sa X + beta_sa MHA(Norm(X)),  X' = alpha_ff X^ + beta_ff MLP(Norm(X^))
    Eq. 7:  X' = alpha_comb X + beta_sa MHA(Norm(X)) + beta_ff MLP(Norm(X))   (one shared norm)
    Post-LN: X^ = Norm(alpha_sa X + beta_sa MHA(X)),  X' = Norm(alpha_ff X^ + beta_ff MLP(X^)).
    Peri-LN: X^ = alpha_sa X + beta_sa Norm(MHA(Norm(X))),  X' = alpha_ff X^ + beta_ff Norm(MLP(Norm(X^)))
    (Kim et al. 2025, arXiv 2502.02732, Eq. 3; parallel: each branch output normalised).
    Sphere (nGPT): X^ = Norm(X + a_A (Norm(MHA(X)) - X)),  X' = Norm(X^ + a_M (Norm(MLP(X^)) - X^)), Norm = unit L2 norm.
    A gain that is fixed at 0 drops its term; one fixed at 1 costs no multiply.
    """

    def __init__(self, spec: BlockSpec, width: int, heads: int, depth: int, layer: int, causal: bool):
        super().__init__()
        self.spec, self.layer = spec, layer
        norm = spec.norm
        if norm == "none" and spec.first_layer_norm and layer == 0:
            norm = "layer"
        alpha_ff = spec.norm_alpha if spec.norm_alpha_ff is None else spec.norm_alpha_ff
        self.ln_1 = make_norm(norm, width, spec.norm_eps, spec.norm_alpha, spec.derf_shift)
        self.ln_2 = make_norm(spec.norm, width, spec.norm_eps, alpha_ff, spec.derf_shift) if not spec.parallel else None
        if spec.norm_position == "sphere":  # nGPT's step sizes: |p| alpha_init / base with p initialised at base = 1/sqrt(d)
            self.sphere_base = width**-0.5
            self.alpha_attn = nn.Parameter(torch.full((width,), self.sphere_base))
            self.alpha_mlp = nn.Parameter(torch.full((width,), self.sphere_base))
        if spec.norm_position == "peri":  # Peri-LN's output norms, one per branch
            self.ln_attn_out = make_norm(spec.norm, width, spec.norm_eps, spec.norm_alpha, spec.derf_shift)
            self.ln_mlp_out = make_norm(spec.norm, width, spec.norm_eps, alpha_ff, spec.derf_shift)
        self.attn = Attention(spec, width, heads, causal, layer, depth)
        self.mlp = MLP(spec, width)
        skip = "alpha_comb" if spec.parallel else "alpha_sa"
        inits = {skip: getattr(spec, skip), "beta_sa": spec.resolve_beta_sa(depth), "beta_ff": spec.resolve_beta_ff(depth)}
        if not spec.parallel:
            inits["alpha_ff"] = spec.alpha_ff
        for name, value in inits.items():
            g = gain(value, spec.is_trainable(name))
            if isinstance(g, nn.Parameter):
                setattr(self, name, g)
            else:
                self.register_buffer(name, g)
        self.init_gains = {n: float(v) for n, v in inits.items()}  # what `kernel` sees: the gains at init
        # A fixed gain needs no multiply when it is 1, and its term disappears when it is 0.
        self._fixed = {n: float(v) for n, v in inits.items() if not spec.is_trainable(n)}
        # With a fused mix, beta_sa goes into attention's kernel and beta_ff into W_out, unless a norm sits between them
        # (Peri-LN) or the gain costs nothing anyway
        self._foldable = {n: spec.norm_position in ("pre", "post") and self._fixed.get(n) not in (0.0, 1.0)
                          for n in ("beta_sa", "beta_ff")}
        self.hook_attn_out = HookPoint()  # beta_sa * MHA(...) branch output
        self.hook_mlp_out = HookPoint()  # beta_ff * MLP(...) branch output
        self.hook_mid = HookPoint()  # X^ between the sub-blocks (sequential only)

    def step(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """nGPT's effective step size per channel, |p| alpha_init / base (its 'eigen learning rate')."""
        return (getattr(self, name).abs() * (self.spec.sphere_alpha / self.sphere_base)).to(like.dtype)

    def gains(self) -> dict[str, torch.Tensor]:
        """Every gain of this block (trained or fixed): branch gains, shaped attention's alpha, beta, gamma
        (per head) and the Eq. 6 gains alpha_v, beta_v / alpha_p, beta_p of reparameterised values/projections."""
        names = ("alpha_comb", "beta_sa", "beta_ff") if self.spec.parallel else ("alpha_sa", "beta_sa", "alpha_ff", "beta_ff")
        out = {name: getattr(self, name).detach() for name in names}
        if self.spec.norm_position == "sphere":  # nGPT: the mean step size per branch
            out.update({n: self.step(n, self.alpha_attn).detach().mean() for n in ("alpha_attn", "alpha_mlp")})
        for name in ("alpha", "beta", "gamma"):
            g = getattr(self.attn, name, None)
            if isinstance(g, torch.Tensor):
                out[name] = g.detach()
        for suffix, matrix in (("v", self.attn.value), ("p", self.attn.proj)):
            if isinstance(matrix, ReparamMatrix):
                out[f"alpha_{suffix}"], out[f"beta_{suffix}"] = matrix.alpha.detach(), matrix.beta.detach()
        return out

    def _scale(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        fixed = self._fixed.get(name)
        if fixed == 0.0:
            return None
        if fixed == 1.0:
            return x
        return getattr(self, name).to(x.dtype) * x

    def _attn(self, h: torch.Tensor, key_mask, v1, fuse: bool, out=None) -> torch.Tensor | None:
        """beta_sa out(MHA(h)) (None when beta_sa is fixed at 0). Where the block fuses (`sigprop.blocks.fused`), the
        gain goes into attention's kernel (then the attention module's own output includes it), unless an output norm
        `out` (Peri-LN) comes between them or a forward hook reads that module's output."""
        if fuse and self._foldable["beta_sa"] and not self.attn._forward_hooks:
            return self.attn(h, key_mask, v1, scale=self.beta_sa)
        return self._scale("beta_sa", (out or _same)(self.attn(h, key_mask, v1)))

    def _mlp(self, h: torch.Tensor, fuse: bool, out=None) -> torch.Tensor | None:
        """beta_ff out(MLP(h)), the gain folded into W_out where the block fuses (as `_attn`)."""
        if fuse and self._foldable["beta_ff"] and not self.mlp._forward_hooks:
            return self.mlp(h, scale=self.beta_ff)
        return self._scale("beta_ff", (out or _same)(self.mlp(h)))

    def _sum(self, *terms: torch.Tensor | None) -> torch.Tensor:
        out = None
        for t in terms:
            if t is not None:
                out = t if out is None else out + t
        return out

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, v1: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d); v1: the first block's values (value residual), None elsewhere."""
        spec = self.spec
        if spec.norm_position == "sphere":
            a = self.hook_attn_out(self.attn(x, key_mask, v1))
            x = self.hook_mid(unit(x + self.step("alpha_attn", x) * (unit(a) - x)))
            m = self.hook_mlp_out(self.mlp(x))
            return unit(x + self.step("alpha_mlp", x) * (unit(m) - x))
        out_a, out_m = (self.ln_attn_out, self.ln_mlp_out) if spec.norm_position == "peri" else (_same, _same)
        fuse = self.attn.mix_impl(x.device) in FUSING
        if spec.parallel:
            h = self.ln_1(x)
            if fuse:
                h = autocast_input(h)  # one low-precision copy for attention and the MLP (each would cast its own)
            a = self.hook_attn_out(self._attn(h, key_mask, v1, fuse, out_a))
            m = self.hook_mlp_out(self._mlp(h, fuse, out_m))
            return self._sum(self._scale("alpha_comb", x), a, m)
        if spec.norm_position == "post":
            a = self.hook_attn_out(self._attn(x, key_mask, v1, fuse))
            x = self.hook_mid(self.ln_1(self._sum(self._scale("alpha_sa", x), a)))
            m = self.hook_mlp_out(self._mlp(x, fuse))
            return self.ln_2(self._sum(self._scale("alpha_ff", x), m))
        a = self.hook_attn_out(self._attn(self.ln_1(x), key_mask, v1, fuse, out_a))
        x = self.hook_mid(self._sum(self._scale("alpha_sa", x), a))
        m = self.hook_mlp_out(self._mlp(self.ln_2(x), fuse, out_m))
        return self._sum(self._scale("alpha_ff", x), m)

    def kernel(self, K: Kernel, ctx) -> Kernel:
        """The kernel after this block at init, given the kernel K before it: `forward` term by term, each module by its
        own map (`ctx` says how a random-W^Q softmax enters and carries state across blocks; `sigprop.studies.theory`)."""
        spec, g = self.spec, self.init_gains
        ones = torch.ones(K.shape[:-1], dtype=K.dtype)
        if spec.norm_position == "sphere":  # each branch normalised, a step alpha towards it, the state back on the sphere
            r = torch.diagonal(K, dim1=-2, dim2=-1).mean(-1)[..., None, None]  # ||x||^2 / d: 1 / d on the sphere
            al = spec.sphere_alpha

            def towards(X: Kernel, branch: Kernel, cross: Kernel | float) -> Kernel:
                Bn, cb = normalise(branch)
                R = cross if isinstance(cross, float) else cross * cb[..., None, :]
                return normalise((1 - al) ** 2 * X + al**2 * Bn + al * (1 - al) * sym(R))[0]

            U = normalise(K)[0]
            mid = towards(U, *self.attn.kernel(U, U, ones, ctx))
            return r * towards(mid, self.mlp.kernel(r * mid), 0.0)
        out_a, out_m = (self.ln_attn_out, self.ln_mlp_out) if spec.norm_position == "peri" else (None, None)

        def attn(N: Kernel, X: Kernel, c: torch.Tensor) -> tuple[Kernel, Kernel | float]:
            branch, cross = self.attn.kernel(N, X, c, ctx)
            if out_a is None:
                return branch, cross
            branch, co = out_a.kernel(branch)  # Peri-LN: the output norm; the cross term picks up its c
            return branch, cross if isinstance(cross, float) else cross * co[..., None, :]

        def mlp(N: Kernel) -> Kernel:
            return self.mlp.kernel(N) if out_m is None else out_m.kernel(self.mlp.kernel(N))[0]

        if spec.parallel:
            N, c = self.ln_1.kernel(K)
            branch, cross = attn(N, K, c)
            a, b = g["alpha_comb"], g["beta_sa"]
            return a**2 * K + b**2 * branch + a * b * sym(cross) + g["beta_ff"] ** 2 * mlp(N)
        a, b = g["alpha_sa"], g["beta_sa"]
        if spec.norm_position == "post":
            branch, cross = attn(K, K, ones)
            mid = self.ln_1.kernel(a**2 * K + b**2 * branch + a * b * sym(cross))[0]
            return self.ln_2.kernel(g["alpha_ff"] ** 2 * mid + g["beta_ff"] ** 2 * mlp(mid))[0]
        N, c = self.ln_1.kernel(K)
        branch, cross = attn(N, K, c)
        mid = a**2 * K + b**2 * branch + a * b * sym(cross)
        return g["alpha_ff"] ** 2 * mid + g["beta_ff"] ** 2 * mlp(self.ln_2.kernel(mid)[0])


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def unit(x: torch.Tensor) -> torch.Tensor:
    """Each token (last axis) scaled to unit L2 norm: nGPT's Norm."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
