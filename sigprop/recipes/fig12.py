"""Fig. 12: linear vs cosine learning-rate decay for Pre-LN, SAS and SAS-P, loss per step with a zoom on
the end of training (claim 17): linear decay ends lower although it trails for most of the run."""

from __future__ import annotations

from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan
from sigprop.recipes.pairwise import Side, pairwise, pairwise_runs

BLOCKS = {"ci": ("pre-ln", "sas"), "cpu": ("pre-ln", "sas", "sas-p"), "paper": ("pre-ln", "sas", "sas-p")}


def runs(scale: str) -> list[RunPlan]:
    return pairwise_runs(BLOCKS[scale], {"": lambda b: (b, {}, block_style(b)["label"]),
                                         "-cosine": lambda b: (b, {"schedule": "cosine"}, f"{block_style(b)['label']}, cosine")}, scale)


def make(ctx: Context) -> dict:
    linear, cosine = Side("", "linear", "linear", "linear"), Side("-cosine", "cosine", "cosine", "cosine", ls="--")
    return pairwise(ctx, BLOCKS[ctx.scale], linear, cosine, "fig12", "solid: linear decay, dashed: cosine", claim=17)


def tier(p: RunPlan) -> int:
    """Budget tier: the gallery budget decides claim 17 on Pre-LN and SAS-P; SAS's cosine runs are planned beyond it."""
    return 3 if p.spec.name == "sas" else 2


RECIPE = Recipe(
    name="fig12", paper="Fig. 12", claims=(17,), runs=runs, make=make, tier=tier,
    shows="linear vs cosine LR decay for Pre-LN, SAS, SAS-P, with a zoom on the end of training",
    runtime={"ci": "~8 s", "cpu": "18 runs x ~40 min (1 thread; the 9 linear ones shared with catch-up)", "paper": "18 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
