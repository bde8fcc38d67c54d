"""Fig. 12: linear vs cosine learning-rate decay for Pre-LN, SAS and SAS-P, loss per step with a zoom on
the end of training (claim 17): linear decay ends lower although it trails for most of the run."""

from __future__ import annotations

from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, Side, pairwise, plan

BLOCKS = {"ci": ("pre-ln", "sas"), "cpu": ("pre-ln", "sas", "sas-p"), "paper": ("pre-ln", "sas", "sas-p")}


def runs(scale: str) -> list[RunPlan]:
    return [plan(b) for b in BLOCKS[scale]] + [plan(b, slug=f"{b}-cosine", label=f"{block_style(b)['label']}, cosine", schedule="cosine")
                                         for b in BLOCKS[scale]]


def make(ctx: Context) -> dict:
    linear, cosine = Side("", "linear", "linear", "linear"), Side("-cosine", "cosine", "cosine", "cosine", ls="--")
    return pairwise(ctx, BLOCKS[ctx.scale], linear, cosine, "fig12", "solid: linear decay, dashed: cosine", claim=17)


RECIPE = Recipe(
    name="fig12", paper="Fig. 12", claims=(17,), runs=runs, make=make,
    shows="linear vs cosine LR decay for Pre-LN, SAS, SAS-P, with a zoom on the end of training",
    runtime={"ci": "~8 s", "cpu": "6 runs, 12-40 min", "paper": "6 x 10 h GPU"},
)
