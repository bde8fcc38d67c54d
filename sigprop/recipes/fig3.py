"""Fig. 3: final eval loss vs the fixed residual weight beta_V = beta_P of Eq. 6, identity vs orthogonal
W_init, with Pre-LN and V-SkipInit as reference lines (claims 2, 3, 4).

The reparameterised model is the paper's skipless block: V-SkipInit (shaped attention, no attention skip,
MLP skip, trainable beta_FF) with W^V = W_init + beta dW^V and W^P = W_init + beta dW^P, alpha = 1 and beta
fixed (not trained), dW trainable from zero. beta = 0 with identity init removes V and P altogether. At the cpu
scale (the long scale): identity W_init at every beta and orthogonal at DECIDE_BETAS run 3 paired seeds.
"""

from __future__ import annotations

import pandas as pd

from sigprop.blocks import BlockSpec
from sigprop.plots.paper import plot_final_vs_knob
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import paired_gap, verdict_for

BETAS = {"ci": (0.0, 1.0), "cpu": (0.0, 0.2, 1.0), "paper": (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)}
INITS = ("identity", "orthogonal")
STYLES = {"identity": {"label": "identity $W_{init}$", "color": "#2ca02c", "marker": "D"},
          "orthogonal": {"label": "orthogonal $W_{init}$", "color": "#8c564b", "marker": "s"}}


def reparam_spec(init: str, beta: float) -> BlockSpec:
    """Skipless V-SkipInit block with Eq. 6 values/projections: fixed alpha = 1 and beta, W_init = init."""
    return variant("v-skipinit", "v-skipinit", value="reparam", proj="reparam", value_init=init, proj_init=init,
                   alpha_v=1.0, beta_v=beta, alpha_p=1.0, beta_p=beta)


#: the betas at which orthogonal W_init runs 3 seeds too (claim 3: identity is better "at every beta"); fig15 ties at 0.2
DECIDE_BETAS = {"ci": (1.0,), "cpu": (0.2, 1.0), "paper": (0.2, 1.0)}


def slug(init: str, beta: float, seed: int) -> str:
    return f"reparam-{init}-b{beta:g}-s{seed}"


def runs(scale: str) -> list[RunPlan]:
    seeds, plans = seeds_for(scale), []
    plans += [plan("pre-ln", f"pre-ln-s{s}", params={"seed": s}, seed=s, **lr_for("pre-ln", scale)) for s in seeds]
    plans += [plan("v-skipinit", f"v-skipinit-s{s}", params={"seed": s}, seed=s, **lr_for("v-skipinit", scale)) for s in seeds]
    for init in INITS:
        for b in BETAS[scale]:
            for s in seeds if init == "identity" or b in DECIDE_BETAS[scale] else seeds[:1]:
                plans.append(RunPlan(slug(init, b, s), reparam_spec(init, b), {**lr_for("v-skipinit", scale), "seed": s},
                                     f"{init}, beta={b:g}", {"init": init, "beta": b, "seed": s}))
    return plans


def seed_means(finished: pd.DataFrame, loss: dict) -> pd.DataFrame:
    """One row per (init, beta) with a finished run: the mean final eval loss over its finished seeds (NaN when every
    one diverged: drawn as a cross). A line through seed 0 alone would hide a seed spread of several %."""
    rows = []
    for (init, beta), _ in finished.groupby(["init", "beta"], sort=False):
        v = pd.Series(loss[init][beta], dtype=float)
        rows.append({"init": init, "beta": beta, "final_eval_loss": v.mean() if v.notna().any() else float("nan")})
    return pd.DataFrame(rows, columns=["init", "beta", "final_eval_loss"])


def make(ctx: Context) -> dict:
    seeds = seeds_for(ctx.scale)
    betas = BETAS[ctx.scale]
    loss = {init: {b: seed_losses(ctx, f"reparam-{init}-b{b:g}-s{{}}", seeds) for b in betas} for init in INITS}
    sweep = seed_means(ctx.finished("reparam-"), loss)
    pre = seed_losses(ctx, "pre-ln-s{}", seeds)
    vsk = seed_losses(ctx, "v-skipinit-s{}", seeds)
    spread = pd.DataFrame([{"group": init, "beta": b, "mean": pd.Series(v).mean(), "std": pd.Series(v).std()}
                           for init, d in loss.items() for b, v in d.items() if pd.Series(v).notna().sum() > 1])
    refs = [(block_style("pre-ln")["label"], pd.Series(pre).mean(), block_style("pre-ln")["color"]),
            (block_style("v-skipinit")["label"], pd.Series(vsk).mean(), block_style("v-skipinit")["color"])]
    single = [f"{init} β={b:g}" for init, d in loss.items() for b, v in d.items() if pd.Series(v, dtype=float).notna().sum() == 1]
    plot_final_vs_knob(sweep, "beta", ctx.out / "fig3", ctx.note(f"lines: mean over each point's finished seeds, ± std as error bars"
                                                                 + (f" (one seed only: {', '.join(single)})" if single else "")
                                                                 + "; references: seed means"),
                       group="init", styles=STYLES, refs=refs, xlabel=r"fixed $\beta_V = \beta_P$ (Eq. 6)",
                       spread=spread if len(spread) else None)
    ident = loss["identity"]
    steps = [(lo, hi, paired_gap(ident[lo], ident[hi])) for lo, hi in zip(betas, betas[1:])]
    orth = {b: paired_gap(loss["orthogonal"][b], ident[b]) for b in DECIDE_BETAS[ctx.scale]}
    b0 = paired_gap(ident[betas[0]], pre)
    claims = [verdict(2, verdict_for(g, "better"), f"identity W_init, beta={lo:g} vs beta={hi:g}: {g.text()} (band ±{g.band:.2f}%)")
              for lo, hi, g in steps]
    claims += [verdict(3, verdict_for(g, "worse"), f"beta={b:g}: orthogonal vs identity W_init {g.text()} (band ±{g.band:.2f}%)")
               for b, g in orth.items()]
    claims.append(verdict(4, verdict_for(b0, "matches"), f"identity, beta={betas[0]:g} (no V/P) vs Pre-LN {b0.text()} "
                                                         f"(band ±{b0.band:.2f}%)"))
    to_pre = {init: {f"{b:g}": paired_gap(v, pre).to_dict() for b, v in d.items()} for init, d in loss.items()}
    return {"numbers": {"final_eval_loss": {init: {f"{b:g}": v for b, v in d.items()} for init, d in loss.items()},
                        "pre-ln": pre, "v-skipinit": vsk, "gap_to_pre_ln_pct": to_pre},
            "claims": claims}


def tier(p: RunPlan) -> int:
    """Budget tier: identity beta = 0 (claim 4) with its references decides first (tier 1); the 3-seed points that
    decide claims 2 and 3 (identity at beta 0.2 and 1, orthogonal at DECIDE_BETAS) come next (tier 2); the one-seed
    orthogonal points decide nothing (tier 3)."""
    if p.slug.startswith(("pre-ln", "v-skipinit", "reparam-identity-b0-")):
        return 1
    return 2 if p.params["init"] == "identity" or p.params["beta"] in DECIDE_BETAS["cpu"] else 3


RECIPE = Recipe(
    name="fig3", paper="Fig. 3", claims=(2, 3, 4), runs=runs, make=make, tier=tier,
    shows="final eval loss vs fixed beta_V = beta_P, identity vs orthogonal W_init, Pre-LN / V-SkipInit lines",
    runtime={"ci": "~15 s", "cpu": "22 runs x 20-40 min (1 thread; 6 shared with catch-up, 11 with fig15)", "paper": "not planned"},
    partial=True,  # the long scale, trained over several days
)
