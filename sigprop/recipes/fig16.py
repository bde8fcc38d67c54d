"""Fig. 16 (v1 15): Fig. 4 for the skipless *parallel* block: SAS-P with trainable Eq. 6 gains (beta/alpha = 0.2
at init, identity W_init). The paper: the ratios go to ~0 again, the first-layer value the exception (claim 5)."""

from __future__ import annotations

from sigprop.recipes.base import Context, Recipe, RunPlan
from sigprop.recipes.fig4 import decay_result, decay_runs


def runs(scale: str) -> list[RunPlan]:
    return decay_runs("sas-p", scale)


def make(ctx: Context) -> dict | None:
    return decay_result(ctx, "sas-p", "fig16", "SAS-P")


RECIPE = Recipe(
    name="fig16", paper="Fig. 16", claims=(5,), runs=runs, make=make,
    shows="beta_V/alpha_V and beta_P/alpha_P per layer over training in SAS-P (trainable Eq. 6 gains)",
    runtime={"ci": "~5 s", "cpu": "6 runs x ~40 min (1 thread; 3 shared with catch-up)", "paper": "6 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
