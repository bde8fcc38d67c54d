"""Fig. 25: SAS without the MLP skip (alpha_FF = 0, fixed) with ReLU and leaky ReLU (slope 0.2, 0.8; a
`linear` activation is a knob too), vs SAS with its MLP skip; loss per step (claim 9: all no-skip versions are much slower, and the
more linear the activation the worse). All runs use the same learning rate, so a run that diverges is shown
as such (the paper lowered it to 1e-4 for the no-skip blocks)."""

from __future__ import annotations

from sigprop.blocks import BlockSpec
from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import REPRODUCED, paired_gap, verdict_for

ACTS = {"ci": (("relu", 0.2), ("leaky_relu", 0.8)),
        "cpu": (("relu", 0.2), ("leaky_relu", 0.8)),
        "paper": (("relu", 0.2), ("leaky_relu", 0.2), ("leaky_relu", 0.8))}
COLORS = {"relu": "#d62728", "leaky_relu-0.2": "#ff7f0e", "leaky_relu-0.8": "#bcbd22", "linear": "#7f7f7f"}


def act_name(act: str, slope: float) -> str:
    return f"{act}-{slope:g}" if act == "leaky_relu" else act


def no_mlp_skip(act: str, slope: float) -> BlockSpec:
    sas = variant("sas", "sas")
    return variant("sas", "sas", alpha_ff=0.0, activation=act, leaky_slope=slope,
                   trainable=tuple(g for g in sas.trainable if g != "alpha_ff"))


def runs(scale: str) -> list[RunPlan]:
    plans = []
    for s in seeds_for(scale):
        lr = {**lr_for("sas", scale), "seed": s}
        plans.append(plan("sas", f"sas-s{s}", label="SAS (MLP skip)", params={"seed": s}, **lr))
        plans += [RunPlan(f"sas-noskip-{act_name(a, sl)}-s{s}", no_mlp_skip(a, sl), lr, f"no MLP skip, {act_name(a, sl)}",
                          {"act": act_name(a, sl), "seed": s}) for a, sl in ACTS[scale]]
    return plans


def worse_than(ctx: Context, a: str, b: str, seeds: tuple[int, ...]) -> tuple[str, str]:
    """(verdict, evidence) that variant a ends worse than b over paired seeds; a run of a that diverged (b did not)
    counts as worse, so a variant that diverges at every seed is worse without a number."""
    status = dict(zip(ctx.table().slug, ctx.table().status))
    div = [s for s in seeds if status.get(f"{a}-s{s}") == "diverged"]
    gap = paired_gap(seed_losses(ctx, f"{a}-s{{}}", seeds), seed_losses(ctx, f"{b}-s{{}}", seeds))
    text = f"{a} vs {b} {gap.text()} (band ±{gap.band:.2f}%)" + (f", diverged at seed(s) {div}" if div else "")
    if div and len(div) == len(seeds):
        return REPRODUCED, text
    return verdict_for(gap, "worse"), text


def make(ctx: Context) -> dict:
    seeds, acts = seeds_for(ctx.scale), [act_name(a, s) for a, s in ACTS[ctx.scale]]
    s0 = seeds[0]
    lines = [Line.of(ctx.line(f"sas-s{s0}"), "sas", "SAS (with MLP skip)")]
    lines += [Line(ctx.line(f"sas-noskip-{a}-s{s0}"), f"no MLP skip, {a.replace('_relu-', ' ReLU ').replace('relu', 'ReLU')}",
                   COLORS[a], "x", "--") for a in acts]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig25", ctx.note(f"alpha_FF = 0 (fixed) in the no-skip runs; seed {s0} drawn"),
              panels=(("step", "eval_loss"),))
    loss = {"sas": seed_losses(ctx, "sas-s{}", seeds), **{a: seed_losses(ctx, f"sas-noskip-{a}-s{{}}", seeds) for a in acts}}
    claims = [verdict(9, *worse_than(ctx, f"sas-noskip-{a}", "sas", seeds)) for a in acts]
    claims += [verdict(9, *worse_than(ctx, f"sas-noskip-{a}", "sas-noskip-relu", seeds)) for a in acts if a.startswith("leaky")]
    return {"numbers": {"final_eval_loss": loss}, "claims": claims}


RECIPE = Recipe(
    name="fig25", paper="Fig. 25", claims=(9,), runs=runs, make=make,
    shows="SAS without the MLP skip (ReLU, leaky ReLU) vs SAS with the skip, loss per step",
    runtime={"ci": "~5 s", "cpu": "9 runs x ~40 min (1 thread; 3 shared with catch-up)", "paper": "12 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
