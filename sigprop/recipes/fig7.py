"""Fig. 7: encoder-only masked language modelling (the paper's Crammed BERT, here on the code corpus),
every block, MLM loss vs training time and step (claims 1, 8, 10, 11 in the encoder setting)."""

from __future__ import annotations

from sigprop.plots.training import plot_loss_curves
from sigprop.recipes.base import Context, Recipe, RunPlan, plan
from sigprop.recipes.fig5 import BLOCKS, block_claims

CI_BLOCKS = ("pre-ln", "v-skipinit", "sas-p")


def runs(scale: str) -> list[RunPlan]:
    return [plan(b, slug=f"{b}-mlm", kind="encoder") for b in (CI_BLOCKS if scale == "ci" else BLOCKS)]


def make(ctx: Context) -> dict:
    plot_loss_curves(ctx.runs, ctx.out / "fig7", note=ctx.note("encoder, MLM with 25% masking"))
    numbers, claims = block_claims(ctx, "{b}-mlm", seeds=(0,))  # one seed: reported, not decided
    return {"numbers": numbers, "claims": claims}


RECIPE = Recipe(
    name="fig7", paper="Fig. 7", claims=(1, 8, 10, 11), runs=runs, make=make,
    shows="encoder (MLM) on the code corpus: all blocks, MLM loss vs time and step",
    runtime={"ci": "~8 s", "cpu": "6 runs, 12-40 min", "paper": "6 x 24 h GPU"},
)
