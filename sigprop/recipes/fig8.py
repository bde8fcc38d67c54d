"""Fig. 8: longer training. Pre-LN, SAS and SAS-P trained for 1x and 3x the steps (more tokens, each run
with its own full schedule), eval loss vs step and vs wall-clock time (claim 14: the SAS / SAS-P results
persist with 3x tokens).

At the cpu scale: the long scale (its 1x runs are the catch-up study's; the 3x runs are 6,000 steps, ~1-2 h each on
one core), each block at its 4x128 catch-up LR, 3 paired seeds; the verdict is each block's gap to Pre-LN at 3x.
Beside it: the gap inside the 3x runs at every multiple of the 1x steps (2,000 / 4,000 / 6,000 at the cpu scale;
mid-schedule, the LR not yet decayed) and the change of the final gap from 1x to 3x, paired per seed, which says
whether the 1x result holds, grows or shrinks with tokens (`trend`), and each layer's effective rank at those steps
(`stream_rank`; fig8_rank draws it over training, one panel per block).
"""

from __future__ import annotations

import math

import pandas as pd

from sigprop.plots.outliers import plot_layer_curves
from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import BASE, Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.outliers import layer_curves
from sigprop.recipes.stats import Gap, mean_std, paired_gap, rel_gap, verdict_for

BLOCKS = {"ci": ("pre-ln", "sas"), "cpu": ("pre-ln", "sas", "sas-p"), "paper": ("pre-ln", "sas", "sas-p")}
MULT = 3


def runs(scale: str) -> list[RunPlan]:
    long, plans = BASE[scale].steps * MULT, []
    for s in seeds_for(scale):
        for b in BLOCKS[scale]:
            over = {**lr_for(b, scale), "seed": s}
            plans += [plan(b, f"{b}-s{s}", params={"seed": s}, **over),
                      plan(b, f"{b}-x{MULT}-s{s}", label=f"{block_style(b)['label']}, {MULT}x tokens", params={"seed": s},
                           steps=long, **over)]
    return plans


def eval_losses(ctx: Context) -> pd.Series:
    """Every run's eval losses indexed by (run, step), for `loss_at`."""
    return ctx.runs.metrics.dropna(subset=["eval_loss"]).set_index(["run", "step"]).eval_loss


def loss_at(ctx: Context, ev: pd.Series, slug_format: str, seeds: tuple[int, ...], step: int) -> dict[int, float]:
    """seed -> eval loss at `step` of the runs named slug_format.format(seed) (NaN where a run has no eval there).
    ev: the eval losses indexed by (run, step)."""
    return {s: float(ev.get((ctx.line(slug_format.format(s)), step), float("nan"))) for s in seeds}


def trend(one: dict[str, dict[int, float]], three: dict[str, dict[int, float]]) -> tuple[str, Gap]:
    """How a block's gap to Pre-LN moves from 1x to 3x tokens. one, three: {'block' | 'base': {seed: final loss}}.
    The per-seed change in points (3x gap minus 1x gap, over the seeds with all four losses) 'holds' inside its
    match band, else it 'grows' (the block gains on Pre-LN) or 'shrinks'."""
    gap = {k: {s: rel_gap(d["block"][s], d["base"][s]) for s in d["block"] if s in d["base"]} for k, d in (("1x", one), ("3x", three))}
    seeds = sorted(s for s in gap["1x"] if s in gap["3x"] and math.isfinite(gap["1x"][s] + gap["3x"][s]))
    change = Gap(tuple(gap["3x"][s] - gap["1x"][s] for s in seeds))
    out = change.outcome()
    return {"matches": "holds", "better": "grows", "worse": "shrinks"}.get(out, out), change


def stream_rank(ctx: Context, probes: pd.DataFrame, blocks: tuple[str, ...], seeds: tuple[int, ...], marks: list[int]) -> dict:
    """{block: {layer: {'1x step N' | '3x step M': [mean, std]}}}: the effective rank of every layer's stream (the
    probe's eff_rank over the probe batch's tokens) at the end of the 1x runs and inside the 3x runs at each of `marks`,
    over the seeds that reached it. Whether more tokens narrow a block's stream where Pre-LN's holds is one
    signal-propagation reading of a gap that moves with tokens. probes: the runs' residual-stream probe rows."""
    p = probes[probes.metric == "eff_rank"]
    out: dict = {}
    for b in blocks:
        for key, slug, steps in (("1x", f"{b}-s{{}}", [ctx.base.steps]), (f"{MULT}x", f"{b}-x{MULT}-s{{}}", marks)):
            rows = p[p.run.isin([ctx.line(slug.format(s)) for s in seeds]) & p.step.isin(steps)]
            for (layer, step), g in rows.groupby(["layer", "step"]):
                out.setdefault(b, {}).setdefault(str(layer), {})[f"{key} step {step}"] = mean_std(g.value)
    return out


def make(ctx: Context) -> dict:
    blocks, seeds = BLOCKS[ctx.scale], seeds_for(ctx.scale)
    s0 = seeds[0]
    lines = [Line.of(ctx.line(f"{b}-s{s0}"), b) for b in blocks]
    lines += [Line.of(ctx.line(f"{b}-x{MULT}-s{s0}"), b, f"{block_style(b)['label']}, {MULT}x", ls="--") for b in blocks]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig8", ctx.note(f"solid: {ctx.base.steps} steps, dashed: {MULT}x; seed {s0} "
                                                                 "drawn; time: each run's own clock"),
              panels=(("step", "eval_loss"), ("time", "eval_loss")))
    loss = {b: {x: seed_losses(ctx, f"{b}{suffix}-s{{}}", seeds) for x, suffix in (("1x", ""), (f"{MULT}x", f"-x{MULT}"))}
            for b in blocks}
    gaps = {x: {b: paired_gap(loss[b][x], loss["pre-ln"][x]) for b in blocks if b != "pre-ln"} for x in ("1x", f"{MULT}x")}
    marks = [ctx.base.steps * k for k in range(1, MULT + 1)]
    ev = eval_losses(ctx)
    probes = ctx.runs.probes[ctx.runs.probes.source == "probe"]
    rank = layer_curves(ctx, probes, {block_style(b)["label"] + f", {MULT}x": [ctx.line(f"{b}-x{MULT}-s{s}") for s in seeds]
                                      for b in blocks}, "eff_rank")
    if not rank.empty:
        plot_layer_curves(rank, ctx.out / "fig8_rank", "eff_rank",
                          ctx.note(f"{MULT}x runs; mean ± std over seeds; layer 0 = embedding"), log=False)
    at = {b: {m: loss_at(ctx, ev, f"{b}-x{MULT}-s{{}}", seeds, m) for m in marks} for b in blocks}
    inside = {b: {m: paired_gap(at[b][m], at["pre-ln"][m]) for m in marks} for b in blocks if b != "pre-ln"}
    moves = {b: trend(*({"block": loss[b][x], "base": loss["pre-ln"][x]} for x in ("1x", f"{MULT}x"))) for b in inside}
    claims = [verdict(14, verdict_for(g, "matches"),
                      f"{b} vs Pre-LN at {MULT}x tokens {g.text()} (band ±{g.band:.2f}%); inside the {MULT}x runs at step "
                      + ", ".join(f"{m:,} {inside[b][m].text()}" for m in marks)
                      + f"; at 1x {gaps['1x'][b].text()}; from 1x to {MULT}x the gap {moves[b][0]} "
                        f"(change {moves[b][1].text().replace('%', ' points')})")
              for b, g in gaps[f"{MULT}x"].items()]
    return {"numbers": {"final_eval_loss": loss, "gap_to_pre_ln_pct": {x: {b: g.to_dict() for b, g in d.items()}
                                                                       for x, d in gaps.items()},
                        f"gap_inside_{MULT}x_pct": {b: {str(m): g.to_dict() for m, g in d.items()} for b, d in inside.items()},
                        "trend_1x_to_3x": {b: {"trend": t, "change_points": c.to_dict()} for b, (t, c) in moves.items()},
                        "eff_rank_per_layer": stream_rank(ctx, probes, blocks, seeds, marks)},
            "claims": claims}


RECIPE = Recipe(
    name="fig8", paper="Fig. 8", claims=(14,), runs=runs, make=make,
    shows="longer training (3x tokens) vs 1x for Pre-LN, SAS, SAS-P, loss vs step and time",
    runtime={"ci": "~10 s", "cpu": "18 runs: 9 at 1x (~40 min, from catch-up), 9 at 3x (~2 h)", "paper": "18 x 10-30 h GPU"},
    partial=True,  # the long scale, trained over several days
)
