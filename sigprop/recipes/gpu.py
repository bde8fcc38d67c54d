"""The paper's model size on one GPU: Pre-LN, SAS and SAS-P at 18 x 768, batch 128, T = 128 (issue 10, item 8).

Every CPU scale stops at width 128; this recipe trains the paper's width and depth at the paper's LR (1e-3) for as
long as one ten-minute call on one GPU allows (`recipes.base.GPU`: 1,500 steps, 24.6M tokens, bf16), so the catch-up
study's question -- does the early plateau of SAS / SAS-P end, and is there per-step parity after it -- gets one
answer at the paper's size. One seed: an indication, never a verdict (claims stay "not decidable (1 seed)").

    sigprop reproduce gpu --scale gpu              # on a machine with a GPU (benchmarks/gpu_scale.sh)
    sigprop reproduce gpu --scale gpu --replot     # anywhere: redraw from the committed records

The figure names the device (from each run's env.json) and the tokens/s of each block, measured by the training
clocks of runs that trained one after another on that device.
"""

from __future__ import annotations

import json

import pandas as pd

from sigprop.plots.catchup import plot_gap_vs_tokens
from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.stats import caught_up, paired_gap, rel_gap, verdict_for
from sigprop.runs import ENV

BLOCKS = ("pre-ln", "sas-p", "sas")  # trained in this order: the headline pair first, should a call run short
CLAIMS = {"sas": 8, "sas-p": 10}
#: the paper's own schedule, its first 1,200 steps: 2,000 warm-up steps of 40K to a peak of 1e-3, so the LR at step t
#: is 1e-3 t / 2000, i.e. a run of 1,200 steps whose 1,200-step warm-up peaks at 6e-4. Pre-LN and SAS-P only.
PREFIX_BLOCKS = ("pre-ln", "sas-p")
PREFIX = {"gpu": {"steps": 1200, "warmup": 1200, "lr": 1e-3 * 1200 / 2000}, "ci": {"warmup": 10, "lr": 6e-4}}


def runs(scale: str) -> list[RunPlan]:
    short = [plan(b, f"{b}-s{s}", params={"seed": s, "stage": "short warm-up"}, seed=s) for s in seeds_for(scale) for b in BLOCKS]
    prefix = [plan(b, f"{b}-paper-prefix-s{s}", f"{block_style(b)['label']}, paper's warm-up", {"seed": s, "stage": "paper prefix"},
                   seed=s, **PREFIX[scale]) for s in seeds_for(scale) for b in PREFIX_BLOCKS]
    return short + prefix


def devices(ctx: Context) -> list[str]:
    """The device names the finished runs trained on (env.json), in plan order, without repeats."""
    names = []
    for run in ctx.finished().run:
        path = ctx.runs.paths.get(run)
        env = json.loads((path / ENV).read_text()) if path is not None and (path / ENV).exists() else {}
        names.append(env.get("device_name") or env.get("device") or "?")
    return list(dict.fromkeys(names))


def gap_curves(ctx: Context, seed: int) -> pd.DataFrame:
    """Per eval: each block's eval-loss gap to Pre-LN in % (one seed), tokens seen; the catch-up plot's frame."""
    m = ctx.runs.metrics.dropna(subset=["eval_loss"])
    base = m[m.run == ctx.line(f"pre-ln-s{seed}")].set_index("step")
    rows = []
    for b in BLOCKS[1:]:
        if ctx.line(f"{b}-s{seed}") not in set(ctx.finished().run):
            continue
        for r in m[m.run == ctx.line(f"{b}-s{seed}")].itertuples():
            if r.step in base.index:
                rows.append({"size": f"{ctx.base.depth}x{ctx.base.width}", "block": b, "step": int(r.step),
                             "tokens": int(r.tokens), "mean": rel_gap(r.eval_loss, base.eval_loss[r.step]),
                             "std": float("nan"), "n": 1})
    return pd.DataFrame(rows, columns=["size", "block", "step", "tokens", "mean", "std", "n"])


def speeds(ctx: Context) -> dict[str, dict]:
    """tokens/s of each block's step (training clock: no eval, no probes) and its ratio to Pre-LN's."""
    s = ctx.runs.summaries.set_index("run")
    tps = {b: float(s.tokens_per_s[ctx.line(f"{b}-s0")]) for b in BLOCKS if ctx.line(f"{b}-s0") in s.index}
    return {b: {"tokens_per_s": v, "vs_pre_ln": v / tps["pre-ln"] if "pre-ln" in tps else None} for b, v in tps.items()}


def make(ctx: Context) -> dict | None:
    seeds = seeds_for(ctx.scale)
    done = set(ctx.finished().run)
    if ctx.line(f"pre-ln-s{seeds[0]}") not in done:
        return None  # nothing to compare against yet
    where = ", ".join(devices(ctx))
    speed = speeds(ctx)
    sp = "; ".join(f"{b} {v['tokens_per_s'] / 1e3:,.0f}K tok/s ({v['vs_pre_ln']:.2f}x)" for b, v in speed.items())
    note = ctx.note(f"bf16 on {where}; seed {seeds[0]}, one seed: an indication, not a verdict; {sp}")
    lines = [Line.of(ctx.line(f"{b}-s{seeds[0]}"), b) for b in BLOCKS if ctx.line(f"{b}-s{seeds[0]}") in done]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "gpu_loss", note, panels=(("step", "loss"), ("step", "eval_loss")),
              titles=("train", "eval"), zoom=0.3)
    curves = gap_curves(ctx, seeds[0])
    reach = {(r.size, b): caught_up(list(g.tokens), list(g["mean"]), [1.0] * len(g))
             for b, g in curves.groupby("block") for r in g.head(1).itertuples()}
    plot_gap_vs_tokens(curves, ctx.out / "gpu_gap", note, reach={k: v for k, v in reach.items() if v is not None},
                       lrs={(f"{ctx.base.depth}x{ctx.base.width}", b): ctx.base.lr for b in BLOCKS})
    loss = {b: seed_losses(ctx, f"{b}-s{{}}", seeds) for b in BLOCKS}
    claims, gaps = [], {}
    for b, claim in CLAIMS.items():
        gap = paired_gap(loss[b], loss["pre-ln"])
        gaps[b] = gap.to_dict()
        if gap.n:
            claims.append(verdict(claim, verdict_for(gap, "matches"), f"{b} vs Pre-LN at {ctx.base.depth}x{ctx.base.width} "
                                  f"on {where}, final eval loss {gap.text()}; {speed[b]['vs_pre_ln']:.3f}x Pre-LN's tokens/s"))
    g = curves.groupby("block")
    return {
        "numbers": {
            "device": where, "final_eval_loss": loss, "gap_pct": gaps, "speed": speed,
            "gap_pct_by_step": {b: dict(zip(map(str, d.step), d["mean"].round(3))) for b, d in g},
            "max_gap_pct": {b: {"gap": float(d["mean"].max()), "step": int(d.step[d["mean"].idxmax()])} for b, d in g},
            "tokens_to_within_floor": {b: reach.get((f"{ctx.base.depth}x{ctx.base.width}", b)) for b in g.groups},
        },
        "claims": claims,
    }


RECIPE = Recipe(
    name="gpu", paper="Fig. 5 at the paper's size", claims=(8, 10), runs=runs, make=make, tier=3, scales=("ci", "gpu"),
    shows="Pre-LN, SAS, SAS-P at 18x768, batch 128 on one GPU: loss per step and the gap to Pre-LN vs tokens (1 seed)",
    runtime={"ci": "~5 s", "gpu": "3 runs x ~2.5 min on one H200 (bf16)"},
    partial=True,  # drawn from whatever finished, should one call end before SAS
)
