"""Fig. 6: depth scaling. The same blocks at a shallow and a deep depth (paper: 18 vs 72 blocks, MLP
width 2d), loss per step (claim 13): SAS and SAS-P improve with depth and stay close to Pre-LN, while
V-SkipInit falls further behind. At the cpu scale the depths are scaled down."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, variant, verdict
from sigprop.plots.style import block_style

DEPTHS = {"ci": (1, 2), "cpu": (2, 8), "paper": (18, 72)}
BLOCKS = {"ci": ("pre-ln", "sas", "v-skipinit"), "cpu": ("pre-ln", "sas", "sas-p", "v-skipinit"),
          "paper": ("pre-ln", "sas", "sas-p", "sas-p-nonorm", "v-skipinit")}


def runs(scale: str) -> list[RunPlan]:
    return [RunPlan(f"{b}-mlp2-L{L}", variant(b, b, mlp_mult=2.0), {"depth": L}, f"{block_style(b)['label']}, L={L}",
                    {"depth": L, "base": b})
            for L in DEPTHS[scale] for b in BLOCKS[scale]]


def make(ctx: Context) -> dict:
    shallow, deep = DEPTHS[ctx.scale]
    blocks = BLOCKS[ctx.scale]
    lines = [Line.of(ctx.line(f"{b}-mlp2-L{L}"), b, f"{block_style(b)['label']}, L={L}", ls="-" if L == shallow else "--")
             for b in blocks for L in (shallow, deep)]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig6", ctx.note(f"depth {shallow} (solid) vs {deep} (dashed), MLP width 2d", depth=f"{shallow}|{deep}"))
    t = ctx.table()
    loss = {b: {L: final_loss(t, f"{b}-mlp2-L{L}") for L in (shallow, deep)} for b in blocks}
    improves = {b: loss[b][deep] < loss[b][shallow] for b in blocks if b != "v-skipinit"}
    gap = {L: {b: loss[b][L] - loss["pre-ln"][L] for b in blocks} for L in (shallow, deep)}
    ok = all(improves.values()) and gap[deep]["v-skipinit"] > gap[shallow]["v-skipinit"] and \
        max(abs(gap[deep][b]) for b in improves if b != "pre-ln") < gap[deep]["v-skipinit"]
    ev = "; ".join(f"{b}: L={shallow} {loss[b][shallow]:.3f} -> L={deep} {loss[b][deep]:.3f}" for b in blocks)
    ev += f"; V-SkipInit gap to Pre-LN {gap[shallow]['v-skipinit']:+.3f} -> {gap[deep]['v-skipinit']:+.3f}"
    return {"numbers": {"final_eval_loss": {b: {str(k): v for k, v in d.items()} for b, d in loss.items()}},
            "claims": [verdict(13, ok, ev)]}


RECIPE = Recipe(
    name="fig6", paper="Fig. 6", claims=(13,), runs=runs, make=make,
    shows="depth scaling: loss per step at two depths (MLP width 2d) for Pre-LN, SAS, SAS-P, V-SkipInit",
    runtime={"ci": "~10 s", "cpu": "8 runs, 15-60 min", "paper": "10 runs, GPU days"},
)
