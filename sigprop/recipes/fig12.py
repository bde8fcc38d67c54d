"""Fig. 12: linear vs cosine learning-rate decay for Pre-LN, SAS and SAS-P, loss per step with a zoom on
the end of training (claim 17): linear decay ends lower although it trails for most of the run."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, verdict

BLOCKS = {"ci": ("pre-ln", "sas"), "cpu": ("pre-ln", "sas", "sas-p"), "paper": ("pre-ln", "sas", "sas-p")}


def runs(scale: str) -> list[RunPlan]:
    return [plan(b) for b in BLOCKS[scale]] + [plan(b, slug=f"{b}-cosine", label=f"{block_style(b)['label']}, cosine", schedule="cosine")
                                         for b in BLOCKS[scale]]


def make(ctx: Context) -> dict:
    lines = [Line.of(ctx.line(b), b, f"{block_style(b)['label']}, linear") for b in BLOCKS[ctx.scale]]
    lines += [Line.of(ctx.line(f"{b}-cosine"), b, f"{block_style(b)['label']}, cosine", ls="--") for b in BLOCKS[ctx.scale]]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig12", ctx.note("solid: linear decay, dashed: cosine"),
              panels=(("step", "eval_loss"),), zoom=0.3)
    t = ctx.table()
    loss = {b: {"linear": final_loss(t, b), "cosine": final_loss(t, f"{b}-cosine")} for b in BLOCKS[ctx.scale]}
    ok = all(d["linear"] < d["cosine"] for d in loss.values())
    ev = ", ".join(f"{b}: linear {d['linear']:.4f} vs cosine {d['cosine']:.4f}" for b, d in loss.items())
    return {"numbers": {"final_eval_loss": loss}, "claims": [verdict(17, ok, ev)]}


RECIPE = Recipe(
    name="fig12", paper="Fig. 12", claims=(17,), runs=runs, make=make,
    shows="linear vs cosine LR decay for Pre-LN, SAS, SAS-P, with a zoom on the end of training",
    runtime={"ci": "~8 s", "cpu": "6 runs, 12-40 min", "paper": "6 x 10 h GPU"},
)
