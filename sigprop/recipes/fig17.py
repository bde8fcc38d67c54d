"""Figs. 17-20: trajectories of the shaped-attention gains alpha_h (on I), beta_h (on the softmax),
gamma_h (on C) per layer, mean ± std over heads, and of beta_FF per layer, in SAS (claim 16: none of them
collapses to 0 during training)."""

from __future__ import annotations

from sigprop.plots.paper import gain_frame, plot_gain_trajectories
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, verdict

GAINS = (("alpha", r"$\alpha_h$ (on $I$), Fig. 17"), ("beta", r"$\beta_h$ (on softmax), Fig. 18"),
         ("gamma", r"$\gamma_h$ (on $C$), Fig. 19"), ("beta_ff", r"$\beta_{FF}$, Fig. 20"))
#: "collapsed" = the gain's mean over heads fell below this fraction of its initial value
COLLAPSE_FRACTION = 0.1


def runs(scale: str) -> list[RunPlan]:
    return [plan("sas")]


def make(ctx: Context) -> dict:
    run, p = ctx.line("sas"), ctx.runs.probes
    plot_gain_trajectories(p, run, list(GAINS), ctx.out / "fig17_20", ctx.note("SAS"))
    final, worst = {}, {}
    for metric, _ in GAINS:
        g = gain_frame(p, run, metric)
        first = g[g.step == g.step.min()].set_index("layer")["mean"]
        last = g[g.step == g.step.max()].set_index("layer")["mean"]
        final[metric] = {int(k): float(v) for k, v in last.items()}
        worst[metric] = float((last.abs() / first.abs()).min())
    ok = all(w > COLLAPSE_FRACTION for w in worst.values())
    ev = ", ".join(f"{m}: min over layers of |final|/|init| = {w:.2f}" for m, w in worst.items())
    return {"numbers": {"final_mean_over_heads": final, "min_final_over_init": worst}, "claims": [verdict(16, ok, ev)]}


RECIPE = Recipe(
    name="fig17", paper="Figs. 17-20", claims=(16,), runs=runs, make=make,
    shows="alpha, beta, gamma (mean ± std over heads) and beta_FF per layer over training in SAS",
    runtime={"ci": "~3 s", "cpu": "1 run, 2-7 min", "paper": "1 x 10 h GPU"},
)
