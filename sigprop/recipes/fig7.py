"""Fig. 7: encoder-only masked language modelling (the paper's Crammed BERT, here on the code corpus),
every block, MLM loss vs training time and step (claims 1, 8, 10, 11 in the encoder setting).

At the cpu scale: the long scale as an encoder (MLM, 25% masking), each block at its decoder catch-up LR
(no encoder grid), 3 paired seeds; verdicts as in fig5.
"""

from __future__ import annotations

import dataclasses

from sigprop.plots.training import plot_loss_curves
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seeds_for
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.fig5 import BLOCKS, block_claims

CI_BLOCKS = ("pre-ln", "v-skipinit", "sas-p")


def runs(scale: str) -> list[RunPlan]:
    return [plan(b, f"{b}-mlm-s{s}", params={"seed": s}, kind="encoder", seed=s, **lr_for(b, scale))
            for s in seeds_for(scale) for b in (CI_BLOCKS if scale == "ci" else BLOCKS)]


def make(ctx: Context) -> dict:
    s0 = seeds_for(ctx.scale)[0]
    first = {ctx.line(f"{b}-mlm-s{s0}") for b in BLOCKS if f"{b}-mlm-s{s0}" in {p.slug for p in ctx.plans}}
    drawn = dataclasses.replace(ctx.runs, configs=ctx.runs.configs[ctx.runs.configs.run.isin(first)])
    plot_loss_curves(drawn, ctx.out / "fig7", note=ctx.note(f"encoder, MLM with 25% masking; seed {s0} drawn"))
    numbers, claims = block_claims(ctx, "{b}-mlm-s{s}")
    return {"numbers": numbers, "claims": claims}


RECIPE = Recipe(
    name="fig7", paper="Fig. 7", claims=(1, 8, 10, 11), runs=runs, make=make,
    shows="encoder (MLM) on the code corpus: all blocks, MLM loss vs time and step",
    runtime={"ci": "~8 s", "cpu": "18 runs x ~40 min (1 thread)", "paper": "6 x 24 h GPU"},
    partial=True,  # the long scale, trained over several days
)
