"""Fig. 3: final eval loss vs the fixed residual weight beta_V = beta_P of Eq. 6, identity vs orthogonal
W_init, with Pre-LN and V-SkipInit as reference lines (claims 2, 3, 4).

The reparameterised model is the paper's skipless block: V-SkipInit (shaped attention, no attention skip,
MLP skip, trainable beta_FF) with W^V = W_init + beta dW^V and W^P = W_init + beta dW^P, alpha = 1 and beta
fixed (not trained), dW trainable from zero. beta = 0 with identity init removes V and P altogether.
"""

from __future__ import annotations

import numpy as np

from sigprop.blocks import BlockSpec
from sigprop.plots.paper import plot_final_vs_knob
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, variant, verdict

BETAS = {"ci": (0.0, 1.0), "cpu": (0.0, 0.2, 1.0), "paper": (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)}
INITS = ("identity", "orthogonal")
STYLES = {"identity": {"label": "identity $W_{init}$", "color": "#2ca02c", "marker": "D"},
          "orthogonal": {"label": "orthogonal $W_{init}$", "color": "#8c564b", "marker": "s"}}


def reparam_spec(init: str, beta: float) -> BlockSpec:
    """Skipless V-SkipInit block with Eq. 6 values/projections: fixed alpha = 1 and beta, W_init = init."""
    return variant("v-skipinit", "v-skipinit", value="reparam", proj="reparam", value_init=init, proj_init=init,
                   alpha_v=1.0, beta_v=beta, alpha_p=1.0, beta_p=beta)


def runs(scale: str) -> list[RunPlan]:
    plans = [plan("pre-ln"), plan("v-skipinit")]
    for init in INITS:
        for b in BETAS[scale]:
            plans.append(RunPlan(f"reparam-{init[:4]}-b{b:g}", reparam_spec(init, b), {}, f"{init}, beta={b:g}",
                                 {"init": init, "beta": b}))
    return plans


def make(ctx: Context) -> dict:
    t = ctx.table()
    sweep = t[t.slug.str.startswith("reparam-")]
    pre, vsk = final_loss(t, "pre-ln"), final_loss(t, "v-skipinit")
    refs = [(block_style("pre-ln")["label"], pre, block_style("pre-ln")["color"]),
            (block_style("v-skipinit")["label"], vsk, block_style("v-skipinit")["color"])]
    plot_final_vs_knob(sweep, "beta", ctx.out / "fig3", ctx.note(), group="init", styles=STYLES, refs=refs,
                       xlabel=r"fixed $\beta_V = \beta_P$ (Eq. 6)")
    loss = {init: dict(zip(d.beta.astype(float), d.final_eval_loss.astype(float))) for init, d in sweep.groupby("init")}
    betas = sorted(loss["identity"])
    mono = {init: bool(np.all(np.diff([loss[init][b] for b in betas]) > 0)) for init in INITS}
    gaps = {b: loss["orthogonal"][b] - loss["identity"][b] for b in betas}
    b0 = loss["identity"][betas[0]]
    fmt = lambda d: ", ".join(f"beta={b:g}: {v:.3f}" for b, v in d.items())  # noqa: E731
    claims = [
        verdict(2, all(mono.values()), f"identity {fmt(loss['identity'])}; orthogonal {fmt(loss['orthogonal'])}"),
        verdict(3, all(g > 0 for g in gaps.values()), "orthogonal - identity: " + ", ".join(f"beta={b:g}: {g:+.3f}" for b, g in gaps.items())),
        # "matches" at small scale: within 2% of Pre-LN's loss and much closer to it than V-SkipInit
        verdict(4, abs(b0 - pre) <= 0.02 * pre and abs(b0 - pre) < abs(vsk - pre),
                f"identity beta=0: {b0:.3f} vs Pre-LN {pre:.3f} (V-SkipInit {vsk:.3f})"),
    ]
    return {"numbers": {"final_eval_loss": {k: {f"{b:g}": v for b, v in d.items()} for k, d in loss.items()},
                        "pre-ln": pre, "v-skipinit": vsk}, "claims": claims}


RECIPE = Recipe(
    name="fig3", paper="Fig. 3", claims=(2, 3, 4), runs=runs, make=make,
    shows="final eval loss vs fixed beta_V = beta_P, identity vs orthogonal W_init, Pre-LN / V-SkipInit lines",
    runtime={"ci": "~15 s", "cpu": "8 runs, 16-56 min", "paper": "14 x 10 h GPU"},
)
