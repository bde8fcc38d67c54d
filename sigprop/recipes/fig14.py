"""Fig. 14: final eval loss vs the init of the (trainable) MLP-branch gain beta_FF in SAS (paper §1.2:
every skipless block needs beta_FF < 1 at init, O(1/sqrt(L)); claim 21). At the cpu scale: the long scale, 3 paired
seeds per beta_FF; the verdict compares the rule's beta_FF with beta_FF = 1."""

from __future__ import annotations

import pandas as pd

from sigprop.blocks import beta_ff_for_depth
from sigprop.plots.paper import plot_final_vs_knob
from sigprop.recipes.base import BASE, Context, Recipe, RunPlan, final_loss, plan, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.records import FINISHED
from sigprop.recipes.stats import paired_gap, verdict_for

#: explicit beta_FF inits; the SAS preset (beta_FF from the O(1/sqrt(L)) rule, a run other recipes share) is always added
BETA_FF = {"ci": (1.0,), "cpu": (0.05, 1.0), "paper": (0.02, 0.05, 0.2, 0.5, 1.0)}


def runs(scale: str) -> list[RunPlan]:
    rule, plans = beta_ff_for_depth(BASE[scale].depth), []
    for s in seeds_for(scale):
        plans.append(plan("sas", f"sas-s{s}", label=f"SAS, beta_FF={rule:.2f} (rule)", params={"beta_ff": rule, "seed": s},
                          seed=s, **lr_for("sas", scale)))
        plans += [RunPlan(f"sas-bff{b:g}-s{s}", variant("sas", "sas", beta_ff=b), {**lr_for("sas", scale), "seed": s},
                          f"SAS, beta_FF={b:g}", {"beta_ff": b, "seed": s}) for b in BETA_FF[scale]]
    s0 = seeds_for(scale)[0]
    return plans + [plan("pre-ln", f"pre-ln-s{s0}", params={"seed": s0}, seed=s0, **lr_for("pre-ln", scale))]


def make(ctx: Context) -> dict:
    t, seeds = ctx.table(), seeds_for(ctx.scale)
    sas = t[t.slug.str.startswith("sas") & t.status.isin(FINISHED)]
    rule = beta_ff_for_depth(ctx.base.depth)
    slug = lambda b: "sas-s{}" if b == rule else f"sas-bff{b:g}-s{{}}"  # noqa: E731
    betas = sorted({rule, *BETA_FF[ctx.scale]})
    by_seed = {b: seed_losses(ctx, slug(b), seeds) for b in betas}
    spread = pd.DataFrame([{"group": "sas", "beta_ff": b, "mean": pd.Series(v).mean(), "std": pd.Series(v).std()}
                           for b, v in by_seed.items()]) if len(seeds) > 1 else None
    pre = final_loss(t, f"pre-ln-s{seeds[0]}")
    plot_final_vs_knob(sas[sas.seed == seeds[0]], "beta_ff", ctx.out / "fig14",
                       ctx.note(f"O(1/sqrt(L)) rule at L={ctx.base.depth}: {rule:.2f}; line: seed {seeds[0]}, error bars: "
                                f"{len(seeds)} seed{'s' * (len(seeds) != 1)}"), group="block",
                       refs=[("Pre-LN", pre, "#1f77b4")], xlabel=r"$\beta_{FF}$ at init (trainable)", logx=True, spread=spread)
    gap = paired_gap(by_seed[rule], by_seed[1.0])
    ev = (f"beta_FF = {rule:.2f} (the rule) vs 1: final eval loss {gap.text()} (band ±{gap.band:.2f}%); "
          + ", ".join(f"beta_FF={b:g}: " + ", ".join(f"{v:.3f}" for v in d.values()) for b, d in by_seed.items()))
    return {"numbers": {"final_eval_loss": {f"{b:g}": d for b, d in by_seed.items()}, "pre-ln": pre, "rule": rule,
                        "rule_vs_1_gap_pct": gap.to_dict()},
            "claims": [verdict(21, verdict_for(gap, "better"), ev)]}


RECIPE = Recipe(
    name="fig14", paper="Fig. 14", claims=(21,), runs=runs, make=make,
    shows="final eval loss vs beta_FF init (trainable) in SAS, with Pre-LN for reference",
    runtime={"ci": "~5 s", "cpu": "10 runs x ~40 min (1 thread; 4 shared with catch-up)", "paper": "16 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
