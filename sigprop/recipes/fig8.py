"""Fig. 8: longer training. Pre-LN, SAS and SAS-P trained for 1x and 3x the steps (more tokens, each run
with its own full schedule), eval loss vs step and vs wall-clock time (claim 14: the SAS / SAS-P results
persist with 3x tokens).

At the cpu scale: the long scale (its 1x runs are the catch-up study's; the 3x runs are 6,000 steps, ~2 h each on
one core), each block at its 4x128 catch-up LR, 3 paired seeds; the verdict is each block's gap to Pre-LN at 3x.
"""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import BASE, Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import paired_gap, verdict_for

BLOCKS = {"ci": ("pre-ln", "sas"), "cpu": ("pre-ln", "sas", "sas-p"), "paper": ("pre-ln", "sas", "sas-p")}
MULT = 3


def runs(scale: str) -> list[RunPlan]:
    long, plans = BASE[scale].steps * MULT, []
    for s in seeds_for(scale):
        for b in BLOCKS[scale]:
            over = {**lr_for(b, scale), "seed": s}
            plans += [plan(b, f"{b}-s{s}", params={"seed": s}, **over),
                      plan(b, f"{b}-x{MULT}-s{s}", label=f"{block_style(b)['label']}, {MULT}x tokens", params={"seed": s},
                           steps=long, **over)]
    return plans


def make(ctx: Context) -> dict:
    blocks, seeds = BLOCKS[ctx.scale], seeds_for(ctx.scale)
    s0 = seeds[0]
    lines = [Line.of(ctx.line(f"{b}-s{s0}"), b) for b in blocks]
    lines += [Line.of(ctx.line(f"{b}-x{MULT}-s{s0}"), b, f"{block_style(b)['label']}, {MULT}x", ls="--") for b in blocks]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig8", ctx.note(f"solid: {ctx.base.steps} steps, dashed: {MULT}x; seed {s0} "
                                                                 "drawn; time: each run's own clock"),
              panels=(("step", "eval_loss"), ("time", "eval_loss")))
    loss = {b: {x: seed_losses(ctx, f"{b}{suffix}-s{{}}", seeds) for x, suffix in (("1x", ""), (f"{MULT}x", f"-x{MULT}"))}
            for b in blocks}
    gaps = {x: {b: paired_gap(loss[b][x], loss["pre-ln"][x]) for b in blocks if b != "pre-ln"} for x in ("1x", f"{MULT}x")}
    claims = [verdict(14, verdict_for(g, "matches"), f"{b} vs Pre-LN at {MULT}x tokens {g.text()} (band ±{g.band:.2f}%); "
                                                     f"at 1x {gaps['1x'][b].text()}")
              for b, g in gaps[f"{MULT}x"].items()]
    return {"numbers": {"final_eval_loss": loss, "gap_to_pre_ln_pct": {x: {b: g.to_dict() for b, g in d.items()}
                                                                       for x, d in gaps.items()}},
            "claims": claims}


RECIPE = Recipe(
    name="fig8", paper="Fig. 8", claims=(14,), runs=runs, make=make,
    shows="longer training (3x tokens) vs 1x for Pre-LN, SAS, SAS-P, loss vs step and time",
    runtime={"ci": "~10 s", "cpu": "18 runs: 9 at 1x (~40 min, from catch-up), 9 at 3x (~2 h)", "paper": "18 x 10-30 h GPU"},
    partial=True,  # the long scale, trained over several days
)
