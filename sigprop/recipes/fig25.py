"""Fig. 25: SAS without the MLP skip (alpha_FF = 0, fixed) with ReLU and leaky ReLU (slope 0.2, 0.8; a
`linear` activation is a knob too), vs SAS with its MLP skip; loss per step (claim 9: all no-skip versions are much slower, and the
more linear the activation the worse). All runs use the same learning rate, so a run that diverges is shown
as such (the paper lowered it to 1e-4 for the no-skip blocks)."""

from __future__ import annotations

from sigprop.blocks import BlockSpec
from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, variant, verdict

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
    return [plan("sas", label="SAS (MLP skip)")] + [
        RunPlan(f"sas-noskip-{act_name(a, s)}", no_mlp_skip(a, s), {}, f"no MLP skip, {act_name(a, s)}", {"act": act_name(a, s)})
        for a, s in ACTS[scale]]


def make(ctx: Context) -> dict:
    acts = [act_name(a, s) for a, s in ACTS[ctx.scale]]
    lines = [Line.of(ctx.line("sas"), "sas", "SAS (with MLP skip)")]
    lines += [Line(ctx.line(f"sas-noskip-{a}"), f"no MLP skip, {a.replace('_relu-', ' ReLU ').replace('relu', 'ReLU')}",
                   COLORS[a], "x", "--") for a in acts]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig25", ctx.note("alpha_FF = 0 (fixed) in the no-skip runs"),
              panels=(("step", "eval_loss"),))
    t = ctx.table()
    loss = {"sas": final_loss(t, "sas"), **{a: final_loss(t, f"sas-noskip-{a}") for a in acts}}
    status = dict(zip(t.slug, t.status))
    worse = all(not (loss[a] <= loss["sas"] + 0.02) for a in acts)  # NaN (diverged) counts as worse
    leaky = [a for a in acts if a.startswith("leaky")]
    leaky_worse = all(not (loss[a] <= loss["relu"]) for a in leaky) if "relu" in loss else False
    ev = ", ".join(f"{a}: {v:.3f}" + (" (diverged)" if status.get(f"sas-noskip-{a}") == "diverged" else "") for a, v in loss.items())
    return {"numbers": {"final_eval_loss": loss, "status": status}, "claims": [verdict(9, worse and leaky_worse, ev)]}


RECIPE = Recipe(
    name="fig25", paper="Fig. 25", claims=(9,), runs=runs, make=make,
    shows="SAS without the MLP skip (ReLU, leaky ReLU) vs SAS with the skip, loss per step",
    runtime={"ci": "~5 s", "cpu": "3 runs, 6-21 min", "paper": "4 x 10 h GPU"},
)
