"""Figs. 22 and 23 (v2; 23 is v1's 20): with the attention skip, V/P behave the other way (claim 6).

Fig. 22: Pre-LN with trainable Eq. 6 gains (identity W_init, beta/alpha = 0.2 at init): many ratios *grow*,
i.e. values and projections leave the identity when the skip is there (decided over paired seeds: at least half of
the ratios, the first-layer value excluded, above their init at every seed). Fig. 23: Pre-LN with W^V = W^P = I
(no value/projection matrices at all) against the standard trainable dense V/P, loss per step: identity is
slightly *worse* here, unlike in skipless blocks. The loss comparison runs seeds (paired, see recipes.stats).
"""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.fig4 import BETA_INIT, gain_ratio_figure, gain_ratio_fractions, trainable_vp
from sigprop.recipes.stats import MIN_SEEDS, NOT_REPRODUCED, REPRODUCED, paired_gap, too_few_seeds, verdict_for


def runs(scale: str) -> list[RunPlan]:
    identity = variant("pre-ln", "pre-ln", value="identity", proj="identity")
    plans = []
    for s in seeds_for(scale):
        plans += [RunPlan(f"pre-ln-trainable-vp-s{s}", trainable_vp("pre-ln"), {"seed": s}, "Pre-LN, trainable V/P gains", {"seed": s}),
                  plan("pre-ln", f"pre-ln-s{s}", label="Pre-LN", params={"seed": s}, seed=s),
                  RunPlan(f"pre-ln-vp-identity-s{s}", identity, {"seed": s}, "Pre-LN, W^V = W^P = I", {"seed": s})]
    return plans


def make(ctx: Context) -> dict:
    seeds = seeds_for(ctx.scale)
    s0 = seeds[0]
    final, _, _, ratios = gain_ratio_figure(ctx, f"pre-ln-trainable-vp-s{s0}", "fig22", f"Pre-LN (attention skip kept), seed {s0}")
    grown = {s: gain_ratio_fractions(ctx, f"pre-ln-trainable-vp-s{s}")[1] for s in seeds}
    grows = (too_few_seeds(len(seeds)) if len(seeds) < MIN_SEEDS
             else REPRODUCED if min(grown.values()) >= 0.5 else NOT_REPRODUCED)
    lines = [Line.of(ctx.line(f"pre-ln-s{s0}"), "pre-ln", "Pre-LN, trainable dense V/P"),
             Line.of(ctx.line(f"pre-ln-vp-identity-s{s0}"), "pre-ln", "Pre-LN, W^V = W^P = I", ls="--")]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig23", ctx.note(f"seed {s0} drawn; the verdict uses {len(seeds)} seed(s)"),
              panels=(("step", "eval_loss"),), zoom=0.3)
    dense = seed_losses(ctx, "pre-ln-s{}", seeds)
    gap = paired_gap(seed_losses(ctx, "pre-ln-vp-identity-s{}", seeds), dense)
    gains = paired_gap(seed_losses(ctx, "pre-ln-trainable-vp-s{}", seeds), dense)  # beside the claim: the gains against dense V/P
    return {
        "numbers": {"final_ratio": final, "fraction_grown": grown, "identity_vp_gap_pct": gap.to_dict(),
                    "trainable_vp_gap_pct": gains.to_dict()},
        "claims": [
            verdict(6, grows, "Fig. 22: fraction of Pre-LN's ratios (first-layer value excluded) above their init "
                              f"{BETA_INIT} per seed " + ", ".join(f"{v:.0%}" for v in grown.values())
                              + f"; seed {s0}'s final ratios {ratios}; final eval loss vs Pre-LN's dense V/P {gains.text()}"),
            verdict(6, verdict_for(gap, "worse"), f"Fig. 23: Pre-LN with W^V = W^P = I vs trainable dense V/P, final eval loss "
                                                  f"{gap.text()}; match band ±{gap.band:.2f}%"),
        ],
    }


RECIPE = Recipe(
    name="fig22", paper="Figs. 22, 23", claims=(6,), runs=runs, make=make,
    shows="Pre-LN: trainable V/P gain ratios grow (Fig. 22); identity V/P slightly worse than dense (Fig. 23)",
    runtime={"ci": "~5 s", "cpu": "9 runs x ~25-35 min (1 thread; 3 from catch-up)", "paper": "9 x 10 h GPU"},
)
