"""Outlier features (the paper's sequel: He, Noci, Paliotta, Schlag, Hofmann, NeurIPS 2024, arXiv 2405.19279).

Pre-LN, the Outlier-Protected block (OP: no pre-norms, QK-RMSNorm, branch gains 0.2 sqrt(12 / L)) and SAS-P trained
at the long cpu scale with the outlier probes every 100 steps (`probe_outliers`) and a W8A8 evaluation of the final
weights (`quant_eval`). It decides the sequel's claims (paper.md §7, claims 25-30):
25 OP matches Pre-LN per step; 26 Pre-LN's kurtosis grows while OP's stays far lower; 27 a larger LR gives more
outlier features; 28 worse signal propagation (higher batch correlation early) goes with more outlier features;
29 a non-diagonal preconditioner (torch's Muon here; the sequel uses SOAP/Shampoo) gives fewer than AdamW;
30 OP loses less than Pre-LN under W8A8 post-training quantisation.
A model's kurtosis is the largest `of_kurtosis` over its residual-stream points after blocks 1..L.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import spearmanr

from sigprop.plots.outliers import plot_layer_curves, plot_quant_gap, plot_scatter
from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.stats import Gap, not_decidable, paired_gap, verdict_for

BLOCKS = ("pre-ln", "op", "sas-p")
#: seed 0's LR grid of the OP block (Pre-LN's and SAS-P's best at this size is 4e-3, from the catch-up grid)
GRID = {"ci": (1e-3, 3e-3), "cpu": (1e-3, 2e-3, 4e-3)}
#: each block's best LR, where its seeds run: Pre-LN's and SAS-P's from the catch-up grid; OP's the argmin of its grid
#: (checked by `make`: at 4e-3 OP sits on a plateau until the end, 5.38 against 3.55 at 2e-3)
BEST = {"ci": {b: 3e-3 for b in BLOCKS}, "cpu": {"pre-ln": 4e-3, "op": 2e-3, "sas-p": 4e-3}}


def high(scale: str, block: str) -> float:
    """The higher LR of claim 27: twice the block's best (at ci the grid's other point: the pipeline, not the claim)."""
    return 1e-3 if scale == "ci" else 2 * BEST[scale][block]


#: the blocks of the sequel's own claims (Pre-LN and OP); SAS-P runs beside them for reference, as in claim 25
SEQUEL_BLOCKS = ("pre-ln", "op")
MUON_BLOCKS = SEQUEL_BLOCKS
RECORD = {"probe_outliers": True, "quant_eval": True}
KURT = "of_kurtosis"


def slug(block: str, lr: float, seed: int, optimizer: str = "adamw") -> str:
    return f"{block}{'-muon' if optimizer == 'muon' else ''}-lr{lr:g}-s{seed}"


def runs(scale: str) -> list[RunPlan]:
    best, seeds = BEST[scale], seeds_for(scale)
    keys = [("op", lr, 0, "adamw") for lr in GRID[scale]]
    keys += [(b, lr, s, "adamw") for s in seeds for b in BLOCKS for lr in (best[b], high(scale, b))]
    keys += [(b, best[b], s, "muon") for s in seeds for b in MUON_BLOCKS]
    plans = []
    for b, lr, s, opt in dict.fromkeys(keys):
        label = f"{block_style(b)['label']}{', Muon' if opt == 'muon' else ''}, lr {lr:g}"
        plans.append(plan(b, slug(b, lr, s, opt), label=label, params={"seed": s, "lr": lr, "optimizer": opt},
                          seed=s, lr=lr, optimizer=opt, **RECORD))
    return plans


def stream_stats(ctx: Context) -> pd.DataFrame:
    """The outlier statistics of the residual stream after blocks 1..L: rows (run, step, layer, metric, value)."""
    p = ctx.runs.probes
    p = p[(p.source == "probe") & (p.layer >= 1) & p.module.str.endswith("hook_resid_post")]
    return p[["run", "step", "layer", "metric", "value"]]


def model_stat(stats: pd.DataFrame, run: str, metric: str, step: int | None = None, agg: str = "max") -> float:
    """A run's statistic at a step (default: its last probe), max (or mean) over layers; NaN when not recorded."""
    d = stats[(stats.run == run) & (stats.metric == metric)]
    if d.empty:
        return math.nan
    d = d[d.step == (d.step.max() if step is None else step)]
    return float(d.value.max() if agg == "max" else d.value.mean()) if len(d) else math.nan


def per_seed(ctx: Context, stats: pd.DataFrame, block: str, lr: float, opt: str, seeds, **kw) -> dict[int, float]:
    """seed -> model_stat of a finished run (NaN where the run is missing)."""
    done = dict(zip(ctx.finished().slug, ctx.finished().run))
    return {s: model_stat(stats, done[slug(block, lr, s, opt)], **kw) if slug(block, lr, s, opt) in done else math.nan
            for s in seeds}


def layer_curves(ctx: Context, stats: pd.DataFrame, panels: dict[str, list[str]], metric: str) -> pd.DataFrame:
    """rows (panel, layer, step, mean, std, n): a statistic per layer over training, over the panels' runs (seeds)."""
    frames = []
    for name, runs_ in panels.items():
        d = stats[stats.run.isin(runs_) & (stats.metric == metric)]
        if d.empty:
            continue
        g = d.groupby(["layer", "step"]).value.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
        frames.append(g.assign(panel=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def quant_increase(ctx: Context, block: str, lr: float, seeds) -> dict[int, float]:
    """seed -> eval-loss increase under W8A8 in % of the full-precision loss (NaN where not recorded)."""
    s = ctx.runs.summaries.set_index("run") if "final_eval_loss_w8a8" in ctx.runs.summaries else None
    done = dict(zip(ctx.finished().slug, ctx.finished().run))
    out = {}
    for seed in seeds:
        run = done.get(slug(block, lr, seed))
        if s is None or run is None or run not in s.index or pd.isna(s.loc[run, "final_eval_loss_w8a8"]):
            out[seed] = math.nan
            continue
        q, f = float(s.loc[run, "final_eval_loss_w8a8"]), float(s.loc[run, "final_eval_loss"])
        out[seed] = 100 * (q - f) / f
    return out


def diff_gap(a: dict[int, float], b: dict[int, float]) -> Gap:
    """Paired differences a - b (in the values' own unit, e.g. percentage points) over the seeds both have."""
    return Gap(tuple(a[s] - b[s] for s in sorted(a) if s in b and math.isfinite(a[s]) and math.isfinite(b[s])))


def make(ctx: Context) -> dict | None:
    seeds, best, grid = seeds_for(ctx.scale), BEST[ctx.scale], GRID[ctx.scale]
    fin = ctx.finished()
    if fin.empty:
        return None
    done = dict(zip(fin.slug, fin.run))
    stats = stream_stats(ctx)
    numbers: dict = {}
    claims: list[dict] = []

    grid_loss = {f"{lr:g}": seed_losses(ctx, f"op-lr{lr:g}-s{{}}", (0,))[0] for lr in grid}
    finite = {k: v for k, v in grid_loss.items() if math.isfinite(v)}
    op_best = min(finite, key=finite.get) if len(finite) == len(grid) else None
    numbers["op_lr_grid_seed0"] = {"final_eval_loss": grid_loss, "argmin": op_best, "seeds_run_at": f"{best['op']:g}"}
    numbers["best_lr"] = {b: best[b] for b in BLOCKS}
    lrs = ", ".join(f"{block_style(b)['label']} {best[b]:g}" for b in BLOCKS)

    # loss curves of seed 0 at the best LR, and claim 25
    s0 = seeds[0]
    lines = [Line.of(done[slug(b, best[b], s0)], b) for b in BLOCKS if slug(b, best[b], s0) in done]
    if lines:
        plot_loss(ctx.runs.metrics, lines, ctx.out / "outliers_loss", ctx.note(f"seed {s0} drawn", lr=lrs),
                  panels=(("step", "eval_loss"),), zoom=0.3)
    loss = {b: seed_losses(ctx, f"{b}-lr{best[b]:g}-s{{}}", seeds) for b in BLOCKS}
    gaps = {b: paired_gap(loss[b], loss["pre-ln"]) for b in BLOCKS if b != "pre-ln"}
    numbers["final_eval_loss"] = loss
    numbers["gap_to_pre_ln_pct"] = {b: g.to_dict() for b, g in gaps.items()}
    claims.append(verdict(25, verdict_for(gaps["op"], "matches"), f"OP vs Pre-LN, each at its best LR ({lrs}): final eval loss "
                          f"{gaps['op'].text()} (band ±{gaps['op'].band:.2f}%); SAS-P for reference {gaps['sas-p'].text()}"))

    # claim 26: kurtosis per layer over training; Pre-LN's grows, OP's stays lower
    panels = {block_style(b)["label"]: [done[slug(b, best[b], s)] for s in seeds if slug(b, best[b], s) in done] for b in BLOCKS}
    curves = layer_curves(ctx, stats, panels, KURT)
    if not curves.empty:
        plot_layer_curves(curves, ctx.out / "outliers_kurtosis", KURT, ctx.note("mean ± std over seeds", lr=lrs))
    final = {b: per_seed(ctx, stats, b, best[b], "adamw", seeds, metric=KURT) for b in BLOCKS}
    init = {b: per_seed(ctx, stats, b, best[b], "adamw", seeds, metric=KURT, step=0) for b in BLOCKS}
    numbers["kurtosis_final_max_over_layers"] = final
    numbers["kurtosis_init_max_over_layers"] = init
    peak = curves[curves.step == curves.step.max()].groupby("panel").apply(
        lambda g: int(g.loc[g["mean"].idxmax(), "layer"]), include_groups=False).to_dict() if not curves.empty else {}
    numbers["kurtosis_peak_layer_at_end"] = peak
    grows, lower = paired_gap(final["pre-ln"], init["pre-ln"]), paired_gap(final["op"], final["pre-ln"])
    v_grow, v_low = verdict_for(grows, "worse"), verdict_for(lower, "better")
    v26 = v_grow if v_grow != "reproduced" else v_low
    claims.append(verdict(26, v26, f"Pre-LN's kurtosis at the end vs at init {grows.text()} ({v_grow}); OP's vs Pre-LN's "
                                   f"at the end {lower.text()} ({v_low}); peak layer at the end {peak}"))

    # claim 27: a larger LR, more outlier features
    lr_gaps = {b: paired_gap(per_seed(ctx, stats, b, high(ctx.scale, b), "adamw", seeds, metric=KURT), final[b]) for b in BLOCKS}
    numbers["kurtosis_high_lr_vs_best_pct"] = {b: g.to_dict() for b, g in lr_gaps.items()}
    v27 = [verdict_for(lr_gaps[b], "worse") for b in SEQUEL_BLOCKS]  # the sequel's blocks decide; SAS-P for reference
    claims.append(verdict(27, next((v for v in v27 if v != "reproduced"), "reproduced") if ctx.scale != "ci" else v27[0],
                          "; ".join(f"{block_style(b)['label']}{'' if b in SEQUEL_BLOCKS else ' (for reference)'}: kurtosis "
                                    f"at lr {high(ctx.scale, b):g} vs {best[b]:g} {g.text()}" for b, g in lr_gaps.items())))

    # claim 28: early batch correlation vs final kurtosis, over every finished adamw run
    pts = []
    for p in ctx.plans:
        run = done.get(p.slug)
        if run is None or p.params.get("optimizer") != "adamw":
            continue
        early = stats[(stats.run == run) & (stats.metric == "batch_corr_mean") & (stats.step > 0)]
        early = early[early.step == early.step.min()]
        pts.append({"block": p.spec.name, "run": run, "batch_corr_mean": float(early.value.mean()) if len(early) else math.nan,
                    KURT: model_stat(stats, run, KURT)})
    pts = pd.DataFrame(pts).dropna()
    if len(pts) >= 2:
        plot_scatter(pts, "batch_corr_mean", KURT, ctx.out / "outliers_signal_prop",
                     ctx.note("x: at the first probe after init, mean over layers; y: at the end, max over layers; every AdamW run",
                              lr="per run"))
    rho, pval = spearmanr(pts["batch_corr_mean"], pts[KURT]) if len(pts) >= 3 else (math.nan, math.nan)
    numbers["signal_prop_vs_kurtosis"] = {"runs": len(pts), "spearman_rho": float(rho), "p_value": float(pval)}
    v28 = (not_decidable(f"{len(pts)} runs, need 6") if len(pts) < 6 else
           "reproduced" if rho > 0 and pval < 0.05 else "not reproduced")
    claims.append(verdict(28, v28, f"Spearman rho {rho:.2f} (p = {pval:.3f}) over {len(pts)} runs between the early batch "
                                   "correlation and the final kurtosis"))

    # claim 29: Muon against AdamW
    muon = {b: (paired_gap(per_seed(ctx, stats, b, best[b], "muon", seeds, metric=KURT), final[b]),
                paired_gap(seed_losses(ctx, f"{b}-muon-lr{best[b]:g}-s{{}}", seeds), loss[b])) for b in MUON_BLOCKS}
    numbers["muon_vs_adamw_pct"] = {b: {"kurtosis": k.to_dict(), "final_eval_loss": l.to_dict()} for b, (k, l) in muon.items()}
    if any(k.n for k, _ in muon.values()):
        panels = {f"{block_style(b)['label']}, {o}": [done[slug(b, best[b], s, o.lower())] for s in seeds
                                                      if slug(b, best[b], s, o.lower()) in done]
                  for b in MUON_BLOCKS for o in ("AdamW", "Muon")}
        mc = layer_curves(ctx, stats, panels, KURT)
        if not mc.empty:
            plot_layer_curves(mc, ctx.out / "outliers_optimizer", KURT, ctx.note("mean ± std over seeds", lr=lrs))
    v29 = [verdict_for(k, "better") for k, _ in muon.values()]
    claims.append(verdict(29, next((v for v in v29 if v != "reproduced"), "reproduced"),
                          "; ".join(f"{block_style(b)['label']}: Muon vs AdamW kurtosis {k.text()}, final eval loss {l.text()}"
                                    for b, (k, l) in muon.items())))

    # claim 30: the W8A8 loss increase
    inc = {b: quant_increase(ctx, b, best[b], seeds) for b in BLOCKS}
    rows = []
    for b in BLOCKS:
        vals = [v for v in inc[b].values() if math.isfinite(v)]
        if vals:
            g = Gap(tuple(vals))
            rows.append({"block": b, "label": block_style(b)["label"], "mean": g.mean, "std": 0.0 if g.n < 2 else g.std, "n": g.n})
    if rows:
        plot_quant_gap(pd.DataFrame(rows), ctx.out / "outliers_w8a8", ctx.note("± std over seeds", lr=lrs))
    numbers["w8a8_increase_pct"] = inc
    op_vs = diff_gap(inc["op"], inc["pre-ln"])
    claims.append(verdict(30, verdict_for(op_vs, "better"), f"W8A8 eval-loss increase OP minus Pre-LN {op_vs.text()} "
                          "percentage points; per block " + ", ".join(f"{block_style(r['block'])['label']} "
                                                                      f"{r['mean']:+.2f}% ({r['n']} seeds)" for r in rows)))
    return {"numbers": numbers, "claims": claims}


RECIPE = Recipe(
    name="outliers", paper="(sequel: He et al. 2024)", claims=(25, 26, 27, 28, 29, 30), runs=runs, make=make,
    shows="outlier features: kurtosis per layer over training, Pre-LN vs OP vs SAS-P; LR, signal propagation, Muon, W8A8",
    runtime={"ci": "~15 s", "cpu": "26 runs x ~16-25 min (1 thread)", "paper": "GPU days"},
    partial=True, scales=("ci", "cpu"),
)
