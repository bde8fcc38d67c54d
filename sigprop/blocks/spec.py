"""BlockSpec: every knob of the paper's transformer blocks, named as in the paper.

A block variant is *data*, not a class. The fields map onto the paper's equations:

    Eq. 1 (sequential):  X^ = alpha_sa * X + beta_sa * MHA(Norm(X))
                         X' = alpha_ff * X^ + beta_ff * MLP(Norm(X^))
    Eq. 7 (parallel):    X' = alpha_comb * X + beta_sa * MHA(Norm(X)) + beta_ff * MLP(Norm(X))
    Eq. 4 value_skipinit: A <- alpha I + beta A
    Eq. 5 shaped:         A <- alpha I + beta A - gamma C
    Eq. 6 reparam:        W^V = alpha_v W^V_init + beta_v dW^V   (same for W^P)
    u-spa / e-spa:        A_l = D_l softmax(Gamma_l): the token kernel follows a target schedule at init
                          (He et al. 2023, the predecessor paper; see `sigprop.blocks.spa`)
    op (the sequel):      X^ = X + beta_sa MHA(X), X' = X^ + beta_ff MLP(X^): no pre-norms, per-head RMSNorm on
                          queries and keys (`qk_norm`), branch gains O(1/sqrt(L)) (He, Noci, Paliotta, Schlag,
                          Hofmann, "Understanding and Minimising Outlier Features in Transformer Training",
                          NeurIPS 2024, Sec. 4; the authors' `config/model/op.yaml`: 0.2 at 12 blocks)

Presets (`PRESETS`) are named specs; `spec.replace(beta_ff=0.2)` or `--set beta_ff=0.2` changes
any knob. A new variant is a new spec, never a new class.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

from sigprop.blocks.spa import check_target
from sigprop.errors import SigpropError, check_choice, choice_error

Attention = Literal["softmax", "value_skipinit", "shaped", "u-spa", "e-spa"]
Matrix = Literal["dense", "identity", "reparam"]
MatrixInit = Literal["normal", "orthogonal", "identity"]
Norm = Literal["rms", "layer", "dyt", "derf", "none"]
NormPosition = Literal["pre", "post", "peri", "sphere"]
AttnGate = Literal["none", "sigmoid", "sigmoid-head"]
QKNorm = Literal["none", "rms", "layer"]
Activation = Literal["relu", "leaky_relu", "gelu", "linear"]
TieInit = Literal["none", "last_block", "all_blocks"]
EmbedScale = Literal["none", "sqrt-width"]
FinalNorm = Literal["auto", "rms", "layer", "dyt", "derf"]

#: Scalar gains that can be made trainable (names as in the paper).
GAINS = ("alpha_sa", "beta_sa", "alpha_ff", "beta_ff", "alpha_comb", "attn", "value", "proj")

#: Knobs added after runs were first recorded: a run's id (`recipes.base.run_id`) leaves each out while it
#: holds its default, so adding a knob never orphans the committed runs that predate it.
KNOBS_OMIT_AT_DEFAULT: tuple[str, ...] = ("spa_rho", "spa_gamma", "tie_valproj_init", "qk_norm", "logit_softcap",
                                          "beta_ref", "beta_ref_depth", "norm_alpha", "norm_alpha_ff", "norm_alpha_final",
                                          "derf_shift", "attn_gate", "value_residual", "sphere_alpha", "embed_scale", "final_norm")

#: The depth at which the paper's beta_ff = 0.1 was set (CodeParrot, 18 blocks).
BETA_FF_REF_DEPTH = 18
BETA_FF_REF = 0.1


def beta_ff_for_depth(depth: int, ref: float = BETA_FF_REF, ref_depth: int = BETA_FF_REF_DEPTH) -> float:
    """The O(1/sqrt(L)) branch downweighting of skipless blocks (Stable ResNet rule): ref * sqrt(ref_depth / L).

    By default calibrated to the paper's beta_ff = 0.1 at L = 18 (0.42 at L = 1, 0.05 at L = 72); the OP block
    calibrates it to 0.2 at L = 12 for both branches (the sequel's op.yaml).
    """
    return ref * math.sqrt(ref_depth / depth)


@dataclass(frozen=True)
class BlockSpec:
    """The knobs of one transformer block. Field names follow the paper."""

    name: str = "custom"
    # --- Eq. 1 / Eq. 7 branch gains -------------------------------------------------------
    alpha_sa: float = 1.0  # attention skip (0 = removed)
    beta_sa: float | None = 1.0  # attention branch; None = the O(1/sqrt(L)) rule (beta_ref, beta_ref_depth)
    alpha_ff: float = 1.0  # MLP skip (sequential block)
    beta_ff: float | None = 1.0  # MLP branch; None = the O(1/sqrt(L)) rule, beta_ref * sqrt(beta_ref_depth / L)
    beta_ref: float = BETA_FF_REF  # the rule's gain at depth beta_ref_depth (paper: 0.1 at 18; OP: 0.2 at 12)
    beta_ref_depth: int = BETA_FF_REF_DEPTH
    parallel: bool = False  # Eq. 7 instead of Eq. 1
    alpha_comb: float = 1.0  # the single skip of the parallel block (0 = SAS-P)
    # --- attention matrix (Eqs. 2, 4, 5) ----------------------------------------------------
    attention: Attention = "softmax"
    alpha: float = 1.0  # shaped / value-skipinit: weight on I_T
    beta: float = 1.0  # weight on softmax(QK^T)
    gamma: float = 1.0  # shaped: weight on the centring matrix C
    per_head_gains: bool = True  # alpha_h, beta_h, gamma_h per head (paper: small gain)
    query_init: float | None = None  # std of W^Q; 0 makes A(X) = C at init; None = init_std
    spa_rho: float = 0.8  # U-SPA: target off-diagonal correlation rho_L after the last block
    spa_gamma: float = 0.05  # E-SPA: target decay rate gamma_L of exp(-gamma |i - j|) after the last block
    # gated attention (Qiu et al., NeurIPS 2025, arXiv 2505.06708): Y <- Y * sigmoid(X W_theta) on the SDPA output, before
    # W^O; "sigmoid" one gate per channel (the paper's best, elementwise), "sigmoid-head" one per head
    attn_gate: AttnGate = "none"
    # value residual (ResFormer, Zhou et al., arXiv 2410.17897): V_l <- lambda V_l + (1 - lambda) V_1 in blocks 2..L
    value_residual: float | None = None
    qk_norm: QKNorm = "none"  # per-head RMSNorm / LayerNorm on queries and keys (OP block; learnable scale per dim)
    logit_softcap: float | None = None  # c: logits -> c tanh(logits / c) (the sequel's optional `dot_norm_type: tanh`, c = 30)
    # --- values and projections (Eq. 6) -----------------------------------------------------
    value: Matrix = "dense"
    value_init: MatrixInit = "normal"  # dense: normal | orthogonal; reparam W_init: identity | orthogonal
    alpha_v: float = 1.0
    beta_v: float = 1.0
    proj: Matrix = "dense"
    proj_init: MatrixInit = "normal"
    alpha_p: float = 1.0
    beta_p: float = 1.0
    first_layer_value: bool = False  # SAS footnote 6: layer 1 keeps W^V = alpha_v I + beta_v dW
    # App. C, Fig. 15: tie the orthogonal inits so that prod_l W^V_l W^P_l = I at init: "last_block" (LL-tied: the
    # last W^P_init completes the product), "all_blocks" (all-tied: W^P_init,l = (W^V_init,l)^T in every block)
    tie_valproj_init: TieInit = "none"
    # --- normalisation -----------------------------------------------------------------------
    norm: Norm = "rms"
    norm_position: NormPosition = "pre"  # peri: x + Norm(F(Norm(x))) (Peri-LN, Kim et al. 2025, arXiv 2502.02732)
    # sphere (nGPT, Loshchilov, Hsieh, Sun, Ginsburg, ICLR 2025, arXiv 2410.01131, Eq. 10-11): hidden states on the unit
    # sphere, h <- Norm(h + alpha_A (Norm(MHA(h)) - h)), likewise for the MLP; alpha per channel, init sphere_alpha;
    # weight rows renormalised after every optimiser step (`Transformer.renormalize_`)
    sphere_alpha: float = 0.05
    # DyT (Zhu, Chen, He, LeCun, Liu, CVPR 2025, arXiv 2503.10622): gamma * tanh(alpha x) + beta in place of a norm;
    # Derf (Chen, Lu, Zhu, Sun, Liu, arXiv 2512.10938, Eq. 10): gamma * erf(alpha x + s) + beta. alpha's init per place
    # (DyT's LLaMA recipe sets the attention, FFN and final norms apart): None = norm_alpha
    norm_alpha: float = 0.5
    norm_alpha_ff: float | None = None
    norm_alpha_final: float | None = None
    derf_shift: float = 0.0  # s's init
    # the norm before the head: "auto" = the blocks' norm (a LayerNorm where blocks have none, as the official code);
    # e.g. DyT blocks with an RMSNorm before the head separate the point-wise map's two roles (tests/test_successors.py)
    final_norm: FinalNorm = "auto"
    first_layer_norm: bool = False  # norm="none": keep a LayerNorm on block 1's input (official code)
    norm_eps: float = 1e-5
    # --- MLP ---------------------------------------------------------------------------------
    activation: Activation = "relu"
    leaky_slope: float = 0.2
    mlp_mult: float = 4.0
    # --- init and training --------------------------------------------------------------------
    init_std: float = 0.02
    # "sqrt-width": the embeddings times one learnable scalar initialised at sqrt(width), DyT's LLaMA recipe
    # (jiachenzhu/DyT, other_tasks/LLaMA: `shared_scale`): a point-wise norm needs O(1) inputs, and embeddings drawn
    # with std 0.02 leave tanh in its linear range with outputs ~100x below a norm's (the stack sits on the unigram plateau)
    embed_scale: EmbedScale = "none"
    trainable: tuple[str, ...] = ()  # which of GAINS are trainable parameters
    description: str = field(default="", compare=False)
    removes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name, accepted in _CHOICES.items():
            check_choice(name, getattr(self, name), accepted)
        for name, rule in _NUMBERS.items():
            _check_number(name, getattr(self, name), *rule)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise SigpropError(f"knob {name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.trainable, tuple) or not all(isinstance(g, str) for g in self.trainable):
            raise SigpropError(f"knob trainable must be a tuple of gain names, got {self.trainable!r}; accepted: {', '.join(GAINS)}")
        for g in self.trainable:
            check_choice("trainable gain", g, GAINS)
        if self.value == "reparam":
            check_choice("value_init for value='reparam'", self.value_init, ("identity", "orthogonal"))
        if self.proj == "reparam":
            check_choice("proj_init for proj='reparam'", self.proj_init, ("identity", "orthogonal"))
        if self.value == "dense":
            check_choice("value_init for value='dense'", self.value_init, ("normal", "orthogonal"))
        if self.proj == "dense":
            check_choice("proj_init for proj='dense'", self.proj_init, ("normal", "orthogonal"))
        if self.tie_valproj_init != "none" and not (
                self.value in ("dense", "reparam") and self.proj in ("dense", "reparam")
                and self.value_init == self.proj_init == "orthogonal" and not self.first_layer_value):
            raise SigpropError(f"tie_valproj_init={self.tie_valproj_init!r} ties orthogonal values and projections; accepted "
                               f"with value and proj dense or reparam, value_init = proj_init = 'orthogonal', no first_layer_value "
                               f"(got value={self.value!r}/{self.value_init!r}, proj={self.proj!r}/{self.proj_init!r})")
        if self.attention in ("u-spa", "e-spa"):
            check_target(self.attention, self.spa_rho if self.attention == "u-spa" else self.spa_gamma)
        if self.parallel and self.norm_position in ("post", "sphere"):
            raise SigpropError(f"norm_position={self.norm_position!r} is not defined for parallel=True; accepted: 'pre', 'peri'")

    # ------------------------------------------------------------------------------------------
    def replace(self, **knobs: object) -> BlockSpec:
        """A copy with some knobs (or its `name`) changed; unknown knobs raise a one-line error."""
        names = ["name", *knob_names()]
        for k in knobs:
            if k not in names:
                raise choice_error("knob", k, names)
        return dataclasses.replace(self, **knobs)  # type: ignore[arg-type]

    def with_sets(self, sets: list[str] | tuple[str, ...]) -> BlockSpec:
        """Apply CLI-style overrides: ["beta_ff=0.2", "norm=layer", "trainable=beta_ff,attn"]."""
        return self.replace(**dict(parse_set(s) for s in sets)) if sets else self

    def resolve_beta_ff(self, depth: int) -> float:
        return beta_ff_for_depth(depth, self.beta_ref, self.beta_ref_depth) if self.beta_ff is None else float(self.beta_ff)

    def resolve_beta_sa(self, depth: int) -> float:
        return beta_ff_for_depth(depth, self.beta_ref, self.beta_ref_depth) if self.beta_sa is None else float(self.beta_sa)

    def is_trainable(self, gain: str) -> bool:
        return gain in self.trainable

    @property
    def query_std(self) -> float:
        """The std of W^Q at init: `query_init` where set (0 for the paper's skipless blocks), else `init_std`."""
        return self.init_std if self.query_init is None else self.query_init

    @property
    def skipless(self) -> bool:
        """No identity path around attention (the paper's topic)."""
        if self.parallel:
            return self.alpha_comb == 0 and "alpha_comb" not in self.trainable
        return self.alpha_sa == 0 and "alpha_sa" not in self.trainable

    def knobs(self) -> dict[str, object]:
        """The knob values (everything except name and prose)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare and f.name != "name"}

    def diff(self, other: BlockSpec) -> dict[str, object]:
        """Knobs where self differs from other."""
        a, b = self.knobs(), other.knobs()
        return {k: v for k, v in a.items() if b[k] != v}


_CHOICES: dict[str, tuple[str, ...]] = {
    "attention": typing.get_args(Attention),
    "value": typing.get_args(Matrix),
    "proj": typing.get_args(Matrix),
    "value_init": typing.get_args(MatrixInit),
    "proj_init": typing.get_args(MatrixInit),
    "norm": typing.get_args(Norm),
    "qk_norm": typing.get_args(QKNorm),
    "norm_position": typing.get_args(NormPosition),
    "attn_gate": typing.get_args(AttnGate),
    "activation": typing.get_args(Activation),
    "tie_valproj_init": typing.get_args(TieInit),
    "embed_scale": typing.get_args(EmbedScale),
    "final_norm": typing.get_args(FinalNorm),
}


#: Numeric knobs: (lowest, lowest allowed?, highest, None allowed as) -- every one must be a finite real.
_GAIN = (0.0, True, math.inf, None)
_NUMBERS: dict[str, tuple[float, bool, float, str | None]] = {
    **{k: _GAIN for k in ("alpha_sa", "alpha_ff", "alpha_comb", "alpha", "beta", "gamma",
                          "alpha_v", "beta_v", "alpha_p", "beta_p")},
    "beta_sa": (0.0, True, math.inf, "the 1/sqrt(depth) rule"),
    "beta_ff": (0.0, True, math.inf, "the 1/sqrt(depth) rule"),
    "beta_ref": (0.0, False, math.inf, None),
    "beta_ref_depth": (1.0, True, math.inf, None),
    "logit_softcap": (0.0, False, math.inf, "no soft-cap"),
    "norm_alpha": (0.0, False, math.inf, None),
    "norm_alpha_ff": (0.0, False, math.inf, "norm_alpha"),
    "norm_alpha_final": (0.0, False, math.inf, "norm_alpha"),
    "derf_shift": (-math.inf, True, math.inf, None),
    "sphere_alpha": (0.0, False, 1.0, None),
    "value_residual": (0.0, True, 1.0, "off"),
    "query_init": (0.0, True, math.inf, "init_std"),
    "norm_eps": (0.0, False, math.inf, None),
    "leaky_slope": (0.0, True, 1.0, None),
    "mlp_mult": (0.0, False, math.inf, None),
    "init_std": (0.0, False, math.inf, None),
    "spa_rho": (0.0, True, 1.0, None),  # blocks.spa.check_target refines both for the SPA presets
    "spa_gamma": (0.0, False, math.inf, None),
}
_FLAGS = ("parallel", "per_head_gains", "first_layer_value", "first_layer_norm")


def _check_number(name: str, v: object, lo: float, lo_ok: bool, hi: float, none_means: str | None) -> None:
    """One knob's type and range, with the accepted range in the message."""
    if v is None and none_means is not None:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= lo if lo_ok else v > lo) and v <= hi
    if not ok:
        rng = f"{'>=' if lo_ok else '>'} {lo:g}" + (f" and <= {hi:g}" if math.isfinite(hi) else "")
        alt = f", or None ({none_means})" if none_means else ""
        raise SigpropError(f"knob {name} must be a finite number {rng}{alt}; got {v!r}")


def knob_names() -> list[str]:
    return [f.name for f in dataclasses.fields(BlockSpec) if f.compare and f.name != "name"]


def _coerce(knob: str, text: str) -> object:
    """Turn `--set knob=text` into the field's type, with a one-line error if it does not parse."""
    default = getattr(BlockSpec(), knob)
    t = text.strip()
    try:
        if knob == "trainable":
            return tuple(g.strip() for g in t.split(",") if g.strip())
        if knob in ("beta_sa", "beta_ff", "query_init", "logit_softcap", "norm_alpha_ff", "norm_alpha_final", "value_residual"):
            return None if t.lower() in ("none", "auto", "off") else float(t)
        if knob == "beta_ref_depth":
            return int(t)
        if isinstance(default, bool):
            if t.lower() in ("1", "true", "yes", "on"):
                return True
            if t.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, float):
            return float(t)
        return t
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise SigpropError(f"bad value {text!r} for knob {knob!r}; expected {kind}") from None


def parse_set(s: str) -> tuple[str, object]:
    """'beta_ff=0.2' -> ('beta_ff', 0.2)."""
    if "=" not in s:
        raise SigpropError(f"bad --set {s!r}; expected knob=value, e.g. beta_ff=0.2")
    k, v = s.split("=", 1)
    k = k.strip().replace("-", "_")
    names = knob_names()
    if k not in names:
        raise choice_error("knob", k, names)
    return k, _coerce(k, v)


# ------------------------------------------------------------------------------------------------
# Presets (paper.md §1.5-1.7, §1.10)
# ------------------------------------------------------------------------------------------------

_SKIPLESS_ATTN = dict(attention="shaped", alpha=1.0, beta=1.0, gamma=1.0, query_init=0.0)
_SAS_GAINS = ("beta_sa", "beta_ff", "attn", "value")
#: U-/E-SPA (sigprop.blocks.spa): no attention skip, W^Q = 0, orthogonal trainable values and projections
_SPA = dict(alpha_sa=0.0, query_init=0.0, value_init="orthogonal", proj_init="orthogonal", trainable=("beta_sa", "beta_ff"),
            removes="attention skip (kernel steered by position bias)")

PRESETS: dict[str, BlockSpec] = {
    s.name: s
    for s in [
        BlockSpec(
            name="pre-ln",
            description="Pre-LN (Eq. 1, all gains 1): the standard GPT block",
            removes="nothing (baseline)",
        ),
        BlockSpec(
            name="post-ln",
            norm_position="post",
            description="Post-LN: Norm after each skip-sum (original Transformer)",
            removes="nothing (norm moved after the skip)",
        ),
        BlockSpec(
            name="parallel",
            parallel=True,
            description="Parallel block (Eq. 7, GPT-J/PaLM): attention and MLP side by side",
            removes="sequential sub-blocks",
        ),
        BlockSpec(
            name="skipless",
            alpha_sa=0.0,
            description="Naive skipless: Pre-LN without the attention skip, plain softmax attention",
            removes="attention skip (naively: rank collapse)",
        ),
        BlockSpec(
            name="v-skipinit",
            alpha_sa=0.0,
            beta_ff=None,
            value_init="orthogonal",
            proj_init="orthogonal",
            trainable=("beta_sa", "beta_ff", "attn"),
            description="V-SkipInit as in the paper's figures: shaped attention, orthogonal trainable V/P",
            removes="attention skip",
            **_SKIPLESS_ATTN,
        ),
        BlockSpec(
            name="sas",
            alpha_sa=0.0,
            beta_ff=None,
            value="identity",
            proj="identity",
            first_layer_value=True,
            trainable=_SAS_GAINS + ("alpha_ff",),
            description="SAS: shaped attention, no attention skip, no W^V/W^P (Sec. 4.2)",
            removes="attention skip, values, projections",
            **_SKIPLESS_ATTN,
        ),
        BlockSpec(
            name="sas-p",
            parallel=True,
            alpha_comb=0.0,
            beta_ff=None,
            value="identity",
            proj="identity",
            first_layer_value=True,
            trainable=_SAS_GAINS,
            description="SAS-P: SAS attention in parallel with the MLP, no skips at all (Sec. 4.3)",
            removes="all skips, values, projections, sequential sub-blocks",
            **_SKIPLESS_ATTN,
        ),
        BlockSpec(
            name="sas-p-nonorm",
            parallel=True,
            alpha_comb=0.0,
            beta_ff=None,
            value="identity",
            proj="identity",
            first_layer_value=True,
            norm="none",
            first_layer_norm=True,
            trainable=_SAS_GAINS,
            description="SAS-P without normalisation (Sec. 4.4; a LayerNorm stays on block 1's input)",
            removes="all skips, values, projections, sequential sub-blocks, norms",
            **_SKIPLESS_ATTN,
        ),
        BlockSpec(
            name="op",
            norm="none",
            first_layer_norm=True,
            qk_norm="rms",
            beta_sa=None,
            beta_ff=None,
            beta_ref=0.2,
            beta_ref_depth=12,
            description="OP, Outlier-Protected (He et al. 2024): skips kept, no pre-norms, QK-RMSNorm, branch gains 0.2 sqrt(12 / L)",
            removes="pre-norms (QK-norm keeps the attention logits bounded)",
        ),
        BlockSpec(
            name="dyt",
            norm="dyt",
            embed_scale="sqrt-width",
            description="DyT (Zhu et al. 2025): Pre-LN with every norm replaced by gamma tanh(alpha x) + beta, alpha init 0.5, "
                        "embeddings times a learnable sqrt(width) (its LLaMA recipe)",
            removes="normalisation (a point-wise tanh in its place)",
        ),
        BlockSpec(
            name="derf",
            norm="derf",
            embed_scale="sqrt-width",
            description="Derf (Chen et al. 2025): Pre-LN with every norm replaced by gamma erf(alpha x + s) + beta, embeddings "
                        "times a learnable sqrt(width) as DyT's",
            removes="normalisation (a point-wise erf in its place)",
        ),
        BlockSpec(
            name="peri-ln",
            norm_position="peri",
            description="Peri-LN (Kim et al. 2025): a norm on each sub-layer's input and output, x + Norm(F(Norm(x)))",
            removes="nothing (a norm added on each branch output)",
        ),
        BlockSpec(
            name="gated",
            attn_gate="sigmoid",
            description="Gated attention (Qiu et al. 2025): Pre-LN with a sigmoid gate per channel on the SDPA output",
            removes="nothing (a gate added after attention)",
        ),
        BlockSpec(
            name="ngpt",
            norm="none",
            norm_position="sphere",
            qk_norm="rms",
            description="nGPT (Loshchilov et al. 2025): states and weight rows on the unit sphere, per-channel step sizes alpha 0.05",
            removes="normalisation layers (every state and weight row normalised instead)",
        ),
        BlockSpec(
            name="u-spa",
            beta_ff=None,
            attention="u-spa",
            description="U-SPA (He et al. 2023): skipless, W^Q = 0, positional bias so the kernel's uniform correlation rises to spa_rho",
            **_SPA,
        ),
        BlockSpec(
            name="e-spa",
            # The last E-SPA steps amplify the extra uniform correlation an MLP branch adds (through the rescaling
            # D_l): at the rule's 0.1 * sqrt(18 / L) the kernel ends 0.11 above its target at L=12, d=1024; at 0.05,
            # 0.03 at L=18 (measured on random tokens). U-SPA keeps the rule.
            beta_ff=0.05,
            attention="e-spa",
            description="E-SPA (He et al. 2023): skipless, W^Q = 0, positional bias so the kernel follows exp(-gamma_l |i-j|)",
            **_SPA,
        ),
    ]
}


def get_spec(block: str | BlockSpec, sets: list[str] | tuple[str, ...] = ()) -> BlockSpec:
    """A preset by name (or a spec as is), with `--set` overrides applied."""
    if isinstance(block, BlockSpec):
        return block.with_sets(sets)
    if not isinstance(block, str):
        raise choice_error("block", block, PRESETS)
    key = block.strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise choice_error("block", block, PRESETS)
    return PRESETS[key].with_sets(sets)


def preset_names() -> list[str]:
    return list(PRESETS)
