"""Figs. 17-20: trajectories of the shaped-attention gains alpha_h (on I), beta_h (on the softmax),
gamma_h (on C) per layer, mean ± std over heads, and of beta_FF per layer, in SAS (claim 16: none of them
collapses to 0 during training). At the cpu scale: the long scale's SAS runs (shared with the catch-up study),
3 seeds; the verdict takes the smallest ratio over seeds and layers."""

from __future__ import annotations

from sigprop.plots.paper import gain_frame, plot_gain_trajectories
from sigprop.recipes.base import Context, Recipe, RunPlan, finished_seeds, plan, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for

GAINS = (("alpha", r"$\alpha_h$ (on $I$), Fig. 17"), ("beta", r"$\beta_h$ (on softmax), Fig. 18"),
         ("gamma", r"$\gamma_h$ (on $C$), Fig. 19"), ("beta_ff", r"$\beta_{FF}$, Fig. 20"))
#: "collapsed" = the gain's mean over heads fell below this fraction of its initial value
COLLAPSE_FRACTION = 0.1


def runs(scale: str) -> list[RunPlan]:
    return [plan("sas", f"sas-s{s}", params={"seed": s}, seed=s, **lr_for("sas", scale)) for s in seeds_for(scale)]


def make(ctx: Context) -> dict | None:
    seeds, p = seeds_for(ctx.scale), ctx.runs.probes
    done = finished_seeds(ctx, "sas-s{}", seeds)
    if not done:
        return None
    plot_gain_trajectories(p, ctx.line(f"sas-s{done[0]}"), list(GAINS), ctx.out / "fig17_20", ctx.note(f"SAS, seed {done[0]}"))
    final, worst = {}, {}
    for metric, _ in GAINS:
        ratios = []
        for s in done:
            g = gain_frame(p, ctx.line(f"sas-s{s}"), metric)
            first = g[g.step == g.step.min()].set_index("layer")["mean"]
            last = g[g.step == g.step.max()].set_index("layer")["mean"]
            final.setdefault(metric, {})[s] = {int(k): float(v) for k, v in last.items()}
            ratios.append(float((last.abs() / first.abs()).min()))
        worst[metric] = min(ratios)
    ok = all(w > COLLAPSE_FRACTION for w in worst.values())
    if len(done) < 3:
        ok = f"not decidable ({len(done)} seed{'s' * (len(done) != 1)}, need 3)"
    ev = (", ".join(f"{m}: min over layers of |final|/|init| = {w:.2f}" for m, w in worst.items())
          + f" (over {len(done)} seed{'s' * (len(done) != 1)})")
    return {"numbers": {"final_mean_over_heads": final, "min_final_over_init": worst, "seeds": done},
            "claims": [verdict(16, ok, ev)]}


RECIPE = Recipe(
    name="fig17", paper="Figs. 17-20", claims=(16,), runs=runs, make=make, tier=1,
    shows="alpha, beta, gamma (mean ± std over heads) and beta_FF per layer over training in SAS",
    runtime={"ci": "~3 s", "cpu": "3 runs x ~40 min (1 thread; shared with catch-up)", "paper": "3 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
