"""Fig. 16 (v1 15): Fig. 4 for the skipless *parallel* block: SAS-P with trainable Eq. 6 gains (beta/alpha = 0.2
at init, identity W_init). The paper: the ratios go to ~0 again, the first-layer value the exception (claim 5)."""

from __future__ import annotations

from sigprop.recipes.base import BASE, CPU_LONG, Context, Recipe, RunPlan, plan
from sigprop.recipes.fig4 import decay_result, trainable_vp


def runs(scale: str) -> list[RunPlan]:
    return [RunPlan("sas-p-trainable-vp", trainable_vp("sas-p"), {}, "SAS-P, trainable V/P gains"), plan("sas-p")]


def make(ctx: Context) -> dict:
    return decay_result(ctx, "sas-p-trainable-vp", "sas-p", "fig16", "SAS-P")


RECIPE = Recipe(
    name="fig16", paper="Fig. 16", claims=(5,), runs=runs, make=make,
    shows="beta_V/alpha_V and beta_P/alpha_P per layer over training in SAS-P (trainable Eq. 6 gains)",
    runtime={"ci": "~5 s", "cpu": "2 runs x ~35 min (1 thread)", "paper": "2 x 10 h GPU"},
    base={**BASE, "cpu": CPU_LONG},  # new recipes start at the long cpu scale (2,000 steps)
)
