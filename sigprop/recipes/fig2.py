"""Fig. 2: V-SkipInit (no attention skip, shaped attention, orthogonal trainable V/P) vs Pre-LN, train and
eval loss per step (claim 1): removing the attention skip slows training per step."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, verdict


def runs(scale: str) -> list[RunPlan]:
    return [plan("pre-ln"), plan("v-skipinit")]


def make(ctx: Context) -> dict:
    t = ctx.table()
    lines = [Line.of(ctx.line(s), s) for s in ("pre-ln", "v-skipinit")]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig2", ctx.note(), panels=(("step", "loss"), ("step", "eval_loss")),
              titles=("train", "eval"))
    pre, vsk = final_loss(t, "pre-ln"), final_loss(t, "v-skipinit")
    train_gap = {s: float(t[t.slug == s].final_train_loss.iloc[0]) for s in ("pre-ln", "v-skipinit")}
    return {
        "numbers": {"final_eval_loss": {"pre-ln": pre, "v-skipinit": vsk}, "final_train_loss": train_gap},
        "claims": [verdict(1, vsk > pre, f"final eval loss V-SkipInit {vsk:.3f} vs Pre-LN {pre:.3f} ({vsk - pre:+.3f})")],
    }


RECIPE = Recipe(
    name="fig2", paper="Fig. 2", claims=(1,), runs=runs, make=make,
    shows="V-SkipInit vs Pre-LN: train and eval loss per step (the slowdown without the attention skip)",
    runtime={"ci": "~5 s", "cpu": "2 runs, 4-14 min", "paper": "2 x 10 h GPU"},
)
