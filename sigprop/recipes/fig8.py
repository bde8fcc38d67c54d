"""Fig. 8: longer training. Pre-LN, SAS and SAS-P trained for 1x and 3x the steps (more tokens, each run
with its own full schedule), eval loss vs wall-clock time (claim 14)."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import BASE, Context, Recipe, RunPlan, final_loss, plan, verdict

BLOCKS = {"ci": ("pre-ln", "sas"), "cpu": ("pre-ln", "sas", "sas-p"), "paper": ("pre-ln", "sas", "sas-p")}
MULT = 3


def runs(scale: str) -> list[RunPlan]:
    long = BASE[scale].steps * MULT
    return [plan(b) for b in BLOCKS[scale]] + [
        plan(b, slug=f"{b}-x{MULT}", label=f"{block_style(b)['label']}, {MULT}x tokens", steps=long) for b in BLOCKS[scale]]


def make(ctx: Context) -> dict:
    blocks = BLOCKS[ctx.scale]
    lines = [Line.of(ctx.line(b), b) for b in blocks]
    lines += [Line.of(ctx.line(f"{b}-x{MULT}"), b, f"{block_style(b)['label']}, {MULT}x", ls="--") for b in blocks]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig8", ctx.note(f"solid: {ctx.base.steps} steps, dashed: {MULT}x"),
              panels=(("time", "eval_loss"), ("step", "eval_loss")))
    t = ctx.table()
    loss = {b: {"1x": final_loss(t, b), f"{MULT}x": final_loss(t, f"{b}-x{MULT}")} for b in blocks}
    pre = loss["pre-ln"][f"{MULT}x"]
    ok = all(loss[b][f"{MULT}x"] <= pre * 1.02 for b in blocks if b != "pre-ln")
    ev = ", ".join(f"{b}: {d['1x']:.3f} -> {d[f'{MULT}x']:.3f}" for b, d in loss.items())
    return {"numbers": {"final_eval_loss": loss}, "claims": [verdict(14, ok, ev + f" (SAS/SAS-P within 2% of Pre-LN at {MULT}x)")]}


RECIPE = Recipe(
    name="fig8", paper="Fig. 8", claims=(14,), runs=runs, make=make,
    shows="longer training (3x tokens) vs 1x for Pre-LN, SAS, SAS-P, loss vs time",
    runtime={"ci": "~10 s", "cpu": "6 runs, 20-80 min", "paper": "6 x 10-30 h GPU"},
)
