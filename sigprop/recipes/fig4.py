"""Fig. 4: trainable Eq. 6 gains in a skipless (SAS-style, sequential) model: beta_V/alpha_V and
beta_P/alpha_P per layer over training, identity W_init, alpha = 1 and beta = 0.2 at init, no weight
decay on them (claim 5). The ratios should decay towards 0 except the first layer's value; the final loss
should not beat SAS with fixed identity V/P."""

from __future__ import annotations

import numpy as np

from sigprop.blocks import BlockSpec
from sigprop.plots.paper import gain_frame, plot_gain_trajectories
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, variant, verdict

BETA_INIT = 0.2


def trainable_vp(base: str = "sas") -> BlockSpec:
    """`base` with W^V, W^P = I + beta dW in every layer and alpha_V, beta_V, alpha_P, beta_P trainable
    (SAS: Fig. 4, SAS-P: Fig. 16, Pre-LN with its attention skip: Fig. 22)."""
    spec = variant(base, base)
    return variant(base, base, value="reparam", proj="reparam", value_init="identity", proj_init="identity",
                   alpha_v=1.0, beta_v=BETA_INIT, alpha_p=1.0, beta_p=BETA_INIT,
                   trainable=tuple(dict.fromkeys(spec.trainable + ("value", "proj"))))


def runs(scale: str) -> list[RunPlan]:
    return [RunPlan("sas-trainable-vp", trainable_vp("sas"), {}, "SAS, trainable V/P gains"), plan("sas")]


def final_ratios(probes, run: str) -> dict[str, dict[int, float]]:
    """The last probed beta/alpha of the values and projections, per layer."""
    final = {}
    for m in ("beta_v/alpha_v", "beta_p/alpha_p"):
        g = gain_frame(probes, run, m)
        last = g[g.step == g.step.max()].set_index("layer")["mean"]
        final[m] = {int(k): float(v) for k, v in last.items()}
    return final


def gain_ratio_figure(ctx: Context, slug: str, fig: str, what: str) -> tuple[dict, float, float, str]:
    """Draw the beta/alpha trajectories of run `slug`; returns (final ratios, fraction of ratios below their init
    with the first-layer value excluded, fraction above, the ratios as text)."""
    run = ctx.line(slug)
    p = ctx.runs.probes
    plot_gain_trajectories(p, run, [("beta_v/alpha_v", r"$\beta_V/\alpha_V$"), ("beta_p/alpha_p", r"$\beta_P/\alpha_P$")],
                           ctx.out / fig, ctx.note(f"{what} with W = alpha I + beta dW, beta/alpha = {BETA_INIT} at init"),
                           ref={"beta_v/alpha_v": 0.05, "beta_p/alpha_p": 0.05})
    final = final_ratios(p, run)
    rest = [abs(v) for m, d in final.items() for layer, v in d.items() if not (m == "beta_v/alpha_v" and layer == 1)]
    below = float(np.mean([v < BETA_INIT for v in rest]))
    above = float(np.mean([v > BETA_INIT for v in rest]))
    text = "; ".join(f"{m}: " + ", ".join(f"L{k} {v:.3f}" for k, v in d.items()) for m, d in final.items())
    return final, below, above, text


def decay_result(ctx: Context, slug: str, fixed_slug: str, fig: str, what: str) -> dict:
    """Claim 5 for one skipless block: the trainable ratios decay (>= 75% below their init, first-layer value
    excluded) and the trainable model does not beat fixed identity V/P (Figs. 4 and 16)."""
    final, decayed, _, ratios = gain_ratio_figure(ctx, slug, fig, what)
    t = ctx.table()
    trained, fixed = final_loss(t, slug), final_loss(t, fixed_slug)
    return {
        "numbers": {"final_ratio": final, "fraction_decayed": decayed, "final_eval_loss": {"trainable": trained, "fixed_identity": fixed}},
        "claims": [
            verdict(5, decayed >= 0.75 and trained >= fixed - 0.01,
                    f"{what}: {decayed:.0%} of ratios (first-layer value excluded) below their init {BETA_INIT}; final ratios "
                    f"{ratios}; eval loss trainable {trained:.3f} vs fixed identity {fixed:.3f}"),
        ],
    }


def make(ctx: Context) -> dict:
    return decay_result(ctx, "sas-trainable-vp", "sas", "fig4", "SAS")


RECIPE = Recipe(
    name="fig4", paper="Fig. 4", claims=(5,), runs=runs, make=make,
    shows="beta_V/alpha_V and beta_P/alpha_P per layer over training in a skipless block (trainable Eq. 6 gains)",
    runtime={"ci": "~5 s", "cpu": "2 runs, 4-14 min", "paper": "2 x 10 h GPU"},
)
