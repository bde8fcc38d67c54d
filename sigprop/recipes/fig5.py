"""Figs. 5 and 26: every block, eval loss vs wall-clock time (Fig. 5) and vs step (Fig. 26) on the same
data and seed (claims 1, 8, 10, 11)."""

from __future__ import annotations

from sigprop.plots.training import plot_loss_curves
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, verdict

BLOCKS = ("pre-ln", "parallel", "v-skipinit", "sas", "sas-p", "sas-p-nonorm")


def runs(scale: str) -> list[RunPlan]:
    return [plan(b) for b in BLOCKS]


def block_claims(ctx: Context, suffix: str = "", tol: float = 0.02) -> tuple[dict, list[dict]]:
    """Final eval loss and tokens/s per block (run slug = block + suffix), and the verdicts on claims 1, 8, 10, 11."""
    t = ctx.table()
    loss = {b: final_loss(t, b + suffix) for b in BLOCKS if (t.slug == b + suffix).any()}
    s = ctx.runs.summaries.set_index("run")
    tps = {b: float(s.loc[ctx.line(b + suffix), "tokens_per_s"]) for b in loss if ctx.line(b + suffix) in s.index}
    pre = loss["pre-ln"]
    rel = {b: loss[b] / pre - 1 for b in loss}
    normed = [b for b in ("pre-ln", "parallel", "sas", "sas-p") if b in tps]
    claims = [verdict(1, loss["v-skipinit"] > pre, f"V-SkipInit {loss['v-skipinit']:.3f} vs Pre-LN {pre:.3f}")]
    if "sas" in loss:
        claims.append(verdict(8, abs(rel["sas"]) <= tol and tps["sas"] > tps["pre-ln"],
                              f"SAS {loss['sas']:.3f} vs Pre-LN {pre:.3f} ({rel['sas']:+.1%}); tokens/s SAS {tps['sas']:.0f} vs Pre-LN {tps['pre-ln']:.0f}"))
    if "sas-p" in loss:
        fastest = max(normed, key=tps.get)
        claims.append(verdict(10, abs(rel["sas-p"]) <= tol and fastest == "sas-p",
                              f"SAS-P {loss['sas-p']:.3f} ({rel['sas-p']:+.1%} vs Pre-LN); fastest normed block: {fastest} "
                              + ", ".join(f"{b} {tps[b]:.0f}" for b in normed) + " tokens/s"))
    if "sas-p-nonorm" in loss:
        nn_ = loss["sas-p-nonorm"]
        claims.append(verdict(11, nn_ == nn_ and 0 <= rel["sas-p-nonorm"] <= 0.05,
                              f"SAS-P no norm {nn_:.3f} ({rel['sas-p-nonorm']:+.1%} vs Pre-LN)"))
    return {"final_eval_loss": loss, "tokens_per_s": tps, "loss_vs_pre_ln": rel}, claims


def make(ctx: Context) -> dict:
    # The time axis is each run's own training time: compare it only between runs made under the same load.
    plot_loss_curves(ctx.runs, ctx.out / "fig5_fig26", note=ctx.note("time: each run's own training clock"))
    numbers, claims = block_claims(ctx)
    return {"numbers": numbers, "claims": claims}


RECIPE = Recipe(
    name="fig5", paper="Figs. 5, 26", claims=(1, 8, 10, 11), runs=runs, make=make,
    shows="all blocks: eval loss vs training time (Fig. 5) and vs step (Fig. 26)",
    runtime={"ci": "~10 s", "cpu": "6 runs, 12-40 min", "paper": "6 x 10 h GPU"},
)
