"""Fig. 2: V-SkipInit (no attention skip, shaped attention, orthogonal trainable V/P) vs Pre-LN, train and
eval loss per step (claim 1): removing the attention skip slows training per step.

At the cpu scale these are the long scale's runs (4x128, 2,000 steps, each block at its catch-up best LR), the
same ones fig5 and the catch-up study use; the verdict is the paired final-loss gap over 3 seeds.
"""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import paired_gap, verdict_for

BLOCKS = ("pre-ln", "v-skipinit")


def runs(scale: str) -> list[RunPlan]:
    return [plan(b, f"{b}-s{s}", params={"seed": s}, seed=s, **lr_for(b, scale)) for s in seeds_for(scale) for b in BLOCKS]


def make(ctx: Context) -> dict:
    seeds = seeds_for(ctx.scale)
    lines = [Line.of(ctx.line(f"{b}-s{seeds[0]}"), b) for b in BLOCKS]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig2", ctx.note(f"seed {seeds[0]} drawn"),
              panels=(("step", "loss"), ("step", "eval_loss")), titles=("train", "eval"))
    loss = {b: seed_losses(ctx, f"{b}-s{{}}", seeds) for b in BLOCKS}
    gap = paired_gap(loss["v-skipinit"], loss["pre-ln"])
    return {
        "numbers": {"final_eval_loss": loss, "gap_pct": gap.to_dict()},
        "claims": [verdict(1, verdict_for(gap, "worse"), f"final eval loss, V-SkipInit vs Pre-LN {gap.text()} "
                                                         f"(band ±{gap.band:.2f}%)")],
    }


RECIPE = Recipe(
    name="fig2", paper="Fig. 2", claims=(1,), runs=runs, make=make, tier=1,
    shows="V-SkipInit vs Pre-LN: train and eval loss per step (the slowdown without the attention skip)",
    runtime={"ci": "~5 s", "cpu": "6 runs x ~40 min (1 thread; all shared with catch-up)", "paper": "6 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
