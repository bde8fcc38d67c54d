"""Fig. 13: shaped attention (alpha I + beta A - gamma C, Eq. 5) vs value-skipinit attention (alpha I +
beta A, Eq. 4, init alpha = 1, beta = 0) inside SAS and SAS-P, loss per step (claim 7)."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, variant, verdict

BLOCKS = {"ci": ("sas",), "cpu": ("sas", "sas-p"), "paper": ("sas", "sas-p")}


def runs(scale: str) -> list[RunPlan]:
    vsi = [RunPlan(f"{b}-vskipinit-attn", variant(b, b, attention="value_skipinit", alpha=1.0, beta=0.0), {},
                   f"{block_style(b)['label']}, value-skipinit attn") for b in BLOCKS[scale]]
    return [plan(b, label=f"{block_style(b)['label']}, shaped attn") for b in BLOCKS[scale]] + vsi


def make(ctx: Context) -> dict:
    lines = [Line.of(ctx.line(b), b, f"{block_style(b)['label']}, shaped", ls="--") for b in BLOCKS[ctx.scale]]
    lines += [Line.of(ctx.line(f"{b}-vskipinit-attn"), b, f"{block_style(b)['label']}, " + r"$\alpha I + \beta A$") for b in BLOCKS[ctx.scale]]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig13", ctx.note("dashed: shaped attention, solid: value-skipinit attention"),
              panels=(("step", "eval_loss"),), zoom=0.3)
    t = ctx.table()
    loss = {b: {"shaped": final_loss(t, b), "value_skipinit": final_loss(t, f"{b}-vskipinit-attn")} for b in BLOCKS[ctx.scale]}
    ok = all(d["shaped"] < d["value_skipinit"] for d in loss.values())
    ev = ", ".join(f"{b}: shaped {d['shaped']:.4f} vs value-skipinit {d['value_skipinit']:.4f}" for b, d in loss.items())
    return {"numbers": {"final_eval_loss": loss}, "claims": [verdict(7, ok, ev)]}


RECIPE = Recipe(
    name="fig13", paper="Fig. 13", claims=(7,), runs=runs, make=make,
    shows="shaped vs value-skipinit attention inside SAS and SAS-P, loss per step",
    runtime={"ci": "~5 s", "cpu": "4 runs, 8-28 min", "paper": "4 x 10 h GPU"},
)
