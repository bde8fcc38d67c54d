"""Fig. 4: trainable Eq. 6 gains in a skipless (SAS-style, sequential) model: beta_V/alpha_V and
beta_P/alpha_P per layer over training, identity W_init, alpha = 1 and beta = 0.2 at init, no weight
decay on them (claim 5). The ratios should decay towards 0 except the first layer's value; the final loss
should not beat SAS with fixed identity V/P."""

from __future__ import annotations

import numpy as np

from sigprop.blocks import BlockSpec
from sigprop.plots.paper import gain_frame, plot_gain_trajectories
from sigprop.recipes.base import Context, Recipe, RunPlan, finished_seeds, plan, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import MIN_SEEDS, NOT_REPRODUCED, REPRODUCED, not_decidable, paired_gap

BETA_INIT = 0.2


def trainable_vp(base: str = "sas") -> BlockSpec:
    """`base` with W^V, W^P = I + beta dW in every layer and alpha_V, beta_V, alpha_P, beta_P trainable
    (SAS: Fig. 4, SAS-P: Fig. 16, Pre-LN with its attention skip: Fig. 22)."""
    spec = variant(base, base)
    return variant(base, base, value="reparam", proj="reparam", value_init="identity", proj_init="identity",
                   alpha_v=1.0, beta_v=BETA_INIT, alpha_p=1.0, beta_p=BETA_INIT,
                   trainable=tuple(dict.fromkeys(spec.trainable + ("value", "proj"))))


def decay_runs(block: str, scale: str) -> list[RunPlan]:
    """Per seed: `block` with trainable Eq. 6 V/P gains, and the block itself (fixed identity V/P), at its long-scale LR."""
    plans = []
    for s in seeds_for(scale):
        over = {**lr_for(block, scale), "seed": s}
        plans += [RunPlan(f"{block}-trainable-vp-s{s}", trainable_vp(block), over, f"{block}, trainable V/P gains", {"seed": s}),
                  plan(block, f"{block}-s{s}", params={"seed": s}, **over)]
    return plans


def runs(scale: str) -> list[RunPlan]:
    return decay_runs("sas", scale)


def final_ratios(probes, run: str) -> dict[str, dict[int, float]]:
    """The last probed beta/alpha of the values and projections, per layer."""
    final = {}
    for m in ("beta_v/alpha_v", "beta_p/alpha_p"):
        g = gain_frame(probes, run, m)
        last = g[g.step == g.step.max()].set_index("layer")["mean"]
        final[m] = {int(k): float(v) for k, v in last.items()}
    return final


def gain_ratio_fractions(ctx: Context, slug: str) -> tuple[float, float, dict]:
    """(fraction of run `slug`'s final ratios below their init, fraction above, the final ratios); the first-layer
    value is left out (the paper's exception)."""
    final = final_ratios(ctx.runs.probes, ctx.line(slug))
    rest = [abs(v) for m, d in final.items() for layer, v in d.items() if not (m == "beta_v/alpha_v" and layer == 1)]
    return float(np.mean([v < BETA_INIT for v in rest])), float(np.mean([v > BETA_INIT for v in rest])), final


def gain_ratio_figure(ctx: Context, slug: str, fig: str, what: str) -> tuple[dict, float, float, str]:
    """Draw the beta/alpha trajectories of run `slug`; returns (final ratios, fraction of ratios below their init
    with the first-layer value excluded, fraction above, the ratios as text)."""
    plot_gain_trajectories(ctx.runs.probes, ctx.line(slug), [("beta_v/alpha_v", r"$\beta_V/\alpha_V$"), ("beta_p/alpha_p", r"$\beta_P/\alpha_P$")],
                           ctx.out / fig, ctx.note(f"{what} with W = alpha I + beta dW, beta/alpha = {BETA_INIT} at init"),
                           ref={"beta_v/alpha_v": 0.05, "beta_p/alpha_p": 0.05})
    below, above, final = gain_ratio_fractions(ctx, slug)
    text = "; ".join(f"{m}: " + ", ".join(f"L{k} {v:.3f}" for k, v in d.items()) for m, d in final.items())
    return final, below, above, text


def decay_result(ctx: Context, block: str, fig: str, what: str) -> dict | None:
    """Claim 5 for one skipless block, over paired seeds: the trainable ratios decay (>= 75% below their init, the
    first-layer value excluded, at every seed; the figure shows the first seed) and the trainable model is not
    better than fixed identity V/P beyond seed noise (Figs. 4 and 16)."""
    seeds = seeds_for(ctx.scale)
    done = finished_seeds(ctx, f"{block}-trainable-vp-s{{}}", seeds)
    if not done:
        return None  # the figure is the trainable model's ratios: nothing to draw before one of its runs is in
    final, decayed, _, ratios = gain_ratio_figure(ctx, f"{block}-trainable-vp-s{done[0]}", fig, f"{what}, seed {done[0]}")
    fractions = {s: gain_ratio_fractions(ctx, f"{block}-trainable-vp-s{s}")[0] for s in done}
    gap = paired_gap(seed_losses(ctx, f"{block}-trainable-vp-s{{}}", seeds), seed_losses(ctx, f"{block}-s{{}}", seeds))
    out = gap.outcome()
    no_gain = out if out.startswith("not decidable") else (NOT_REPRODUCED if out == "better" else REPRODUCED)
    decays = (not_decidable(f"{len(done)} seed{'s' * (len(done) != 1)}, need {MIN_SEEDS}") if len(done) < MIN_SEEDS
              else REPRODUCED if min(fractions.values()) >= 0.75 else NOT_REPRODUCED)
    return {
        "numbers": {"final_ratio": final, "fraction_decayed": fractions,
                    "trainable_vs_fixed_gap_pct": gap.to_dict()},
        "claims": [
            verdict(5, decays, f"{what}: fraction of ratios (first-layer value excluded) below their init {BETA_INIT} per seed "
                               + ", ".join(f"{v:.0%}" for v in fractions.values()) + f"; seed {done[0]}'s final ratios {ratios}"),
            verdict(5, no_gain, f"{what}: final eval loss, trainable V/P gains vs fixed identity {gap.text()} "
                                f"(band ±{gap.band:.2f}%; the claim: no gain)"),
        ],
    }


def make(ctx: Context) -> dict | None:
    return decay_result(ctx, "sas", "fig4", "SAS")


RECIPE = Recipe(
    name="fig4", paper="Fig. 4", claims=(5,), runs=runs, make=make, tier=2,
    shows="beta_V/alpha_V and beta_P/alpha_P per layer over training in a skipless block (trainable Eq. 6 gains)",
    runtime={"ci": "~5 s", "cpu": "6 runs x ~40 min (1 thread; 3 shared with catch-up)", "paper": "6 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
