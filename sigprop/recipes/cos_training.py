"""sigprop's own: token cos_mean per layer through training (layer x step heatmap) for Pre-LN, naive
skipless attention and SAS-P (claim 20): does rank collapse appear, persist or heal during training?"""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_cos_heatmap
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, verdict

BLOCKS = ("pre-ln", "skipless", "sas-p")
COLLAPSED = 0.9


def runs(scale: str) -> list[RunPlan]:
    return [plan(b) for b in BLOCKS]


def make(ctx: Context) -> dict:
    lines = [Line.of(ctx.line(b), b) for b in BLOCKS]
    p = ctx.runs.probes
    plot_cos_heatmap(p, lines, ctx.out / "cos_training", ctx.note())
    cos = p[(p.source == "probe") & (p.metric == "cos_mean")]
    peak, last = {}, {}
    for b in BLOCKS:
        d = cos[cos.run == ctx.line(b)]
        peak[b] = float(d.value.max())
        last[b] = float(d[d.step == d.step.max()].value.max())
    # the claim is about where training ends up: a transient alignment early in training is allowed (and shown)
    ok = last["pre-ln"] < COLLAPSED and last["sas-p"] < COLLAPSED
    ev = ", ".join(f"{b}: max cos_mean over layers at the last step {last[b]:.2f} (peak during training {peak[b]:.2f})" for b in BLOCKS)
    return {"numbers": {"max_cos_mean": peak, "final_max_cos_mean": last}, "claims": [verdict(20, ok, ev)]}


RECIPE = Recipe(
    name="cos-training", paper="(sigprop)", claims=(20,), runs=runs, make=make,
    shows="token cos_mean per layer through training (heatmap) for Pre-LN, naive skipless, SAS-P",
    runtime={"ci": "~5 s", "cpu": "3 runs, 6-21 min", "paper": "3 x 10 h GPU"},
)
