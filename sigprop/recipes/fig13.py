"""Fig. 13: shaped attention (alpha I + beta A - gamma C, Eq. 5) vs value-skipinit attention (alpha I +
beta A, Eq. 4, init alpha = 1, beta = 0) inside SAS and SAS-P, loss per step (claim 7)."""

from __future__ import annotations

from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, variant
from sigprop.recipes.pairwise import Side, pairwise, pairwise_runs

BLOCKS = {"ci": ("sas",), "cpu": ("sas", "sas-p"), "paper": ("sas", "sas-p")}


def runs(scale: str) -> list[RunPlan]:
    return pairwise_runs(BLOCKS[scale], {
        "": lambda b: (b, {}, f"{block_style(b)['label']}, shaped attn"),
        "-vskipinit-attn": lambda b: (variant(b, b, attention="value_skipinit", alpha=1.0, beta=0.0), {},
                                      f"{block_style(b)['label']}, value-skipinit attn")}, scale)


def make(ctx: Context) -> dict:
    shaped = Side("", "shaped", "shaped", "shaped", ls="--")
    vsi = Side("-vskipinit-attn", "value_skipinit", r"$\alpha I + \beta A$", "value-skipinit")
    return pairwise(ctx, BLOCKS[ctx.scale], shaped, vsi, "fig13", "dashed: shaped attention, solid: value-skipinit attention", claim=7)


def tier(p: RunPlan) -> int:
    """Budget tier: the gallery budget decides claim 7 on SAS (the paper's Fig. 13 block); SAS-P's pair is planned beyond it."""
    return 3 if p.spec.name == "sas-p" else 2


RECIPE = Recipe(
    name="fig13", paper="Fig. 13", claims=(7,), runs=runs, make=make, tier=tier,
    shows="shaped vs value-skipinit attention inside SAS and SAS-P, loss per step",
    runtime={"ci": "~5 s", "cpu": "12 runs x ~40 min (1 thread; the 6 shaped ones shared with catch-up)", "paper": "12 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
