"""Fig. 24 (v1 21): SAS and SAS-P with a trainable first-layer value W^V_1 = I + dW (the presets' footnote 6)
against W^V_1 = I like every other layer, loss per step with a zoom on the end. The paper: the trainable
version is very slightly better. Paired seeds decide it (recipes.stats)."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.stats import paired_gap, verdict_for

BLOCKS = ("sas", "sas-p")


def runs(scale: str) -> list[RunPlan]:
    plans = []
    for b in BLOCKS:
        for s in seeds_for(scale):
            plans += [plan(b, f"{b}-s{s}", label=f"{block_style(b)['label']}, trainable W^V_1", params={"seed": s}, seed=s),
                      RunPlan(f"{b}-identity-v1-s{s}", variant(b, b, first_layer_value=False), {"seed": s},
                              f"{block_style(b)['label']}, W^V_1 = I", {"seed": s})]
    return plans


def make(ctx: Context) -> dict:
    seeds = seeds_for(ctx.scale)
    s0 = seeds[0]
    lines = [ln for b in BLOCKS for ln in (Line.of(ctx.line(f"{b}-s{s0}"), b, f"{block_style(b)['label']}, trainable $W^V_1$"),
                                           Line.of(ctx.line(f"{b}-identity-v1-s{s0}"), b, f"{block_style(b)['label']}, $W^V_1 = I$", ls="--"))]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig24", ctx.note(f"seed {s0} drawn; the verdict uses {len(seeds)} seed(s)"),
              panels=(("step", "eval_loss"),), zoom=0.3)
    numbers, claims = {}, []
    for b in BLOCKS:
        gap = paired_gap(seed_losses(ctx, f"{b}-identity-v1-s{{}}", seeds), seed_losses(ctx, f"{b}-s{{}}", seeds))
        numbers[b] = gap.to_dict()
        claims.append(verdict(22, verdict_for(gap, "worse"), f"{block_style(b)['label']}: W^V_1 = I vs trainable W^V_1, final eval "
                                                             f"loss {gap.text()}; match band ±{gap.band:.2f}%"))
    return {"numbers": {"identity_v1_gap_pct": numbers}, "claims": claims}


RECIPE = Recipe(
    name="fig24", paper="Fig. 24", claims=(22,), runs=runs, make=make,
    shows="SAS and SAS-P with a trainable vs identity first-layer value matrix, loss per step",
    runtime={"ci": "~5 s", "cpu": "12 runs x ~35 min (1 thread)", "paper": "12 x 10 h GPU"},
)
