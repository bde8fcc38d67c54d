"""Fig. 7: encoder-only masked language modelling (the paper's Crammed BERT, here on the code corpus),
every block, MLM loss vs training time and step (claims 1, 8, 10, 11 in the encoder setting).

At the cpu scale: the long scale as an encoder (MLM, 25% masking, 80/10/10, loss over the masked tokens): Pre-LN,
SAS, SAS-P and the paper's contrast, V-SkipInit (skipless shaped attention without the V/P changes), each with a
seed-0 LR grid, then 3 paired seeds at its best LR (issue 27); verdicts as in fig5. Beside the loss, sigprop's own
view (fig7_cos): each block's token cos_mean per layer through training, and the largest over layers at the last
probe per seed (a stream whose tokens align, cos_mean ~1, is rank collapse in training).
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from sigprop.plots.paper import Line, plot_cos_heatmap
from sigprop.plots.training import plot_loss_curves
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.fig5 import BLOCKS, gap_text, block_claims, lr_stamp
from sigprop.recipes.fig8 import eval_losses, loss_at
from sigprop.recipes.records import FINAL_ANALYSIS as FINAL
from sigprop.recipes.stats import mean_std, paired_gap, verdict_for
from sigprop.recipes.successors import stream_collapse

CI_BLOCKS = ("pre-ln", "v-skipinit", "sas-p")
ENCODER_BLOCKS = ("pre-ln", "sas", "sas-p", "v-skipinit")
#: the seed-0 LR grid at the cpu scale; the seeds run at BEST, the decoder's catch-up best (4e-3 for all four) until
#: the encoder's own grid says otherwise (make() reports the grid's argmin beside it)
GRID = (2e-3, 4e-3, 8e-3)
#: one step further down for a block whose seed-0 best sat at the grid's lowest LR (Pre-LN: 4.174 at 2e-3 against
#: 4.934 at 4e-3 and 6.501 at 8e-3)
GRID_DOWN: dict[str, tuple[float, ...]] = {"pre-ln": (1e-3,), "v-skipinit": (1e-3,)}
#: the seed-0 grid's argmin where it is not 4e-3: Pre-LN 4.174 at 2e-3 (5.070 at 1e-3, 4.934 at 4e-3); V-SkipInit 5.432
#: at 1e-3 (5.448 at 2e-3, 5.637 at 4e-3: flat to 0.3% at the grid's foot, inside the seeds' noise, so no step further
#: down; Pre-LN's own 1e-3 point shows how fast a lower LR loses at 2,000 steps)
BEST: dict[str, float] = {"pre-ln": 2e-3, "v-skipinit": 1e-3}
#: the fractions of training where make() also reports the paired gap to Pre-LN (at the cpu scale SAS leads Pre-LN
#: until step ~850, then Pre-LN's loss drops by ~1.3 nats in 600 steps and SAS's does not)
ALONG = (0.25, 0.5, 0.75, 1.0)


def final_checkpoints(ctx: Context, blocks: list[str], seeds: tuple[int, ...]) -> dict:
    """Per block of `blocks`, over the seeds whose run holds FINAL: the softmax attention's entropy ratio per layer (heads
    averaged; 1 = uniform, shaped attention's init) and the last layer's cos_mean and kurtosis, as [mean, std].
    FINAL is written beside each seed run's records after it trains (records.FINAL_ANALYSIS says how)."""
    out = {}
    for b in blocks:
        paths = [ctx.runs.paths[r] / FINAL for s in seeds if (r := ctx.line(f"{b}-mlm-s{s}")) in ctx.runs.paths]
        frames = [pd.read_csv(p) for p in paths if p.exists()]
        if not frames:
            continue
        m = pd.concat(frames).query("source == 'measured'")
        last = m.layer.max()
        ent = m[m.metric == "attn_entropy_ratio"]
        out[b] = {"n": len(frames), "attn_entropy_ratio": {str(l): mean_std(g.value) for l, g in ent.groupby("layer")},
                  **{f"{k}_last_layer": mean_std(m[(m.metric == k) & (m.layer == last)].value) for k in ("cos_mean", "of_kurtosis")}}
    return out


def grid_of(block: str) -> tuple[float, ...]:
    return GRID_DOWN.get(block, ()) + GRID


def best(block: str, scale: str) -> float | None:
    return BEST.get(block, lr_for(block, scale).get("lr")) if scale == "cpu" else None


def lr_text(scale: str) -> str | None:
    """The stamp's lr where the blocks' seeds train at different LRs ('0.004, Pre-LN 0.002'), else None (the base's)."""
    lrs = {b: best(b, scale) for b in ENCODER_BLOCKS}
    return lr_stamp(lrs)[0] if scale == "cpu" and len(set(lrs.values())) > 1 else None


def runs(scale: str) -> list[RunPlan]:
    blocks = CI_BLOCKS if scale == "ci" else ENCODER_BLOCKS
    plans = [plan(b, f"{b}-mlm-s{s}", params={"seed": s}, kind="encoder", seed=s, **({"lr": best(b, scale)} if scale == "cpu" else {}))
             for s in seeds_for(scale) for b in blocks]
    if scale == "cpu":
        plans += [plan(b, f"{b}-mlm-lr{lr:g}-s0", params={"seed": 0, "lr": lr}, kind="encoder", seed=0, lr=lr)
                  for b in blocks for lr in grid_of(b) if lr != best(b, scale)]
    return plans


def make(ctx: Context) -> dict:
    s0 = seeds_for(ctx.scale)[0]
    first = {ctx.line(f"{b}-mlm-s{s0}") for b in BLOCKS if f"{b}-mlm-s{s0}" in {p.slug for p in ctx.plans}}
    drawn = dataclasses.replace(ctx.runs, configs=ctx.runs.configs[ctx.runs.configs.run.isin(first)])
    lr = lr_text(ctx.scale)
    plot_loss_curves(drawn, ctx.out / "fig7", note=ctx.note(f"encoder, MLM with 25% masking; seed {s0} drawn, each block at its "
                                                            "best grid LR" * (ctx.scale == "cpu"), lr=lr))
    numbers, claims = block_claims(ctx, "{b}-mlm-s{s}")
    done = set(ctx.finished().slug)
    heat = [Line.of(ctx.line(f"{b}-mlm-s{s0}"), b) for b in ENCODER_BLOCKS if f"{b}-mlm-s{s0}" in done]
    if heat:  # sigprop's own view: does the stream collapse in training (tokens aligned) where the loss stalls?
        plot_cos_heatmap(ctx.runs.probes, heat, ctx.out / "fig7_cos", ctx.note(f"encoder; seed {s0}: token cos_mean per layer "
                                                                              "through training", lr=lr))
    seeds, steps, every = seeds_for(ctx.scale), ctx.base.steps, ctx.base.eval_every
    ev = eval_losses(ctx)
    slugs = {p.slug for p in ctx.plans}
    planned = [b for b in ENCODER_BLOCKS if f"{b}-mlm-s{s0}" in slugs]
    marks = sorted({max(every, round(f * steps / every) * every) for f in ALONG})  # eval steps nearest ALONG
    at = {b: {m: loss_at(ctx, ev, f"{b}-mlm-s{{}}", seeds, m) for m in marks} for b in planned}
    numbers["gap_along_training_pct"] = {b: {str(m): paired_gap(at[b][m], at["pre-ln"][m]).to_dict() for m in at[b]}
                                         for b in planned if b != "pre-ln"}
    numbers["final_checkpoint"] = final_checkpoints(ctx, planned, seeds)
    if {"sas", "v-skipinit"} <= set(planned):  # the paper's contrast proper: skipless with vs without the V/P changes
        vs = paired_gap(seed_losses(ctx, "v-skipinit-mlm-s{}", seeds), seed_losses(ctx, "sas-mlm-s{}", seeds))
        numbers["v_skipinit_vs_sas_pct"] = vs.to_dict()
        claims.append(verdict(1, verdict_for(vs, "worse"), gap_text("final MLM eval loss, V-SkipInit vs SAS", vs)))
    numbers["max_cos_mean_last_probe"] = {b: {s: stream_collapse(ctx.runs.probes, ctx.line(f"{b}-mlm-s{s}"))[0]
                                              for s in seeds if f"{b}-mlm-s{s}" in done} for b in ENCODER_BLOCKS}
    if ctx.scale == "cpu":
        grid = {b: {f"{lr:g}": seed_losses(ctx, f"{b}-mlm-s{{}}" if lr == best(b, "cpu") else f"{b}-mlm-lr{lr:g}-s{{}}", (0,))[0]
                    for lr in grid_of(b)} for b in ENCODER_BLOCKS}
        numbers["lr_grid_seed0"] = grid
        numbers["grid_argmin"] = {b: min(g, key=g.get) if all(v == v for v in g.values()) else None for b, g in grid.items()}
        numbers["seeds_at"] = {b: best(b, "cpu") for b in ENCODER_BLOCKS}
    return {"numbers": numbers, "claims": claims}


RECIPE = Recipe(
    name="fig7", paper="Fig. 7", claims=(1, 8, 10, 11), runs=runs, make=make,
    shows="encoder (MLM) on the code corpus: all blocks, MLM loss vs time and step",
    runtime={"ci": "~8 s", "cpu": "22 runs x ~17-40 min (1 thread)", "paper": "6 x 24 h GPU"},
    partial=True,  # the long scale, trained over several days
)
