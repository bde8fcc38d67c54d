"""Fig. 14: final eval loss vs the init of the (trainable) MLP-branch gain beta_FF in SAS (paper §1.2:
every skipless block needs beta_FF < 1 at init, O(1/sqrt(L)); claim 21)."""

from __future__ import annotations

import numpy as np

from sigprop.blocks import beta_ff_for_depth
from sigprop.plots.paper import plot_final_vs_knob
from sigprop.recipes.base import BASE, Context, Recipe, RunPlan, final_loss, plan, variant, verdict

#: explicit beta_FF inits; the SAS preset (beta_FF from the O(1/sqrt(L)) rule, a run other recipes share) is always added
BETA_FF = {"ci": (1.0,), "cpu": (0.05, 1.0), "paper": (0.02, 0.05, 0.2, 0.5, 1.0)}


def runs(scale: str) -> list[RunPlan]:
    rule = beta_ff_for_depth(BASE[scale].depth)
    return [plan("sas", label=f"SAS, beta_FF={rule:.2f} (rule)", params={"beta_ff": rule})] + [
        RunPlan(f"sas-bff{b:g}", variant("sas", "sas", beta_ff=b), {}, f"SAS, beta_FF={b:g}", {"beta_ff": b}) for b in BETA_FF[scale]
    ] + [plan("pre-ln")]


def make(ctx: Context) -> dict:
    t = ctx.table()
    sweep = t[t.slug.str.startswith("sas")]
    pre = final_loss(t, "pre-ln")
    rule = beta_ff_for_depth(ctx.base.depth)
    plot_final_vs_knob(sweep, "beta_ff", ctx.out / "fig14", ctx.note(f"O(1/sqrt(L)) rule at L={ctx.base.depth}: {rule:.2f}"), group="block",
                       refs=[("Pre-LN", pre, "#1f77b4")], xlabel=r"$\beta_{FF}$ at init (trainable)", logx=True)
    loss = dict(zip(sweep.beta_ff.astype(float), sweep.final_eval_loss.astype(float)))
    small = {b: v for b, v in loss.items() if b < 1}
    best = min(small, key=small.get) if small else float("nan")
    ok = bool(small) and small[best] < loss.get(1.0, np.inf)
    ev = ", ".join(f"beta_FF={b:g}: {v:.3f}" for b, v in loss.items()) + f"; best < 1: {best:g}; Pre-LN {pre:.3f}"
    return {"numbers": {"final_eval_loss": {f"{b:g}": v for b, v in loss.items()}, "pre-ln": pre, "rule": rule},
            "claims": [verdict(21, ok, ev)]}


RECIPE = Recipe(
    name="fig14", paper="Fig. 14", claims=(21,), runs=runs, make=make,
    shows="final eval loss vs beta_FF init (trainable) in SAS, with Pre-LN for reference",
    runtime={"ci": "~5 s", "cpu": "4 runs, 8-28 min", "paper": "7 x 10 h GPU"},
)
