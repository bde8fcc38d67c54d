"""The early plateau of SAS-P (sigprop's own, issue 10 item 5): how long it lasts, and which settings *inside the
paper's architecture* shorten it: beta_FF at init, peak LR, batch size, depth — one factor at a time around the
long cpu scale's setting, 3 seeds each, with Pre-LN at the same LR / batch / depth as the reference.

The plateau's length is measured as the tokens a run needs to reach eval loss PLATEAU_LOSS (6.0; the unigram-level
plateau sits near 6.8 nats at V = 4096; Pre-LN passes 6.0 within ~80 steps at lr 1e-3). Runs are 400 steps at
constant LR after the long scale's 100-step warm-up, so every setting sees the same schedule until it exits.
What the paper used: beta_FF = 0.1 at every depth (its skipless config), lr 1e-3, batch 128, depth 18.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sigprop.blocks.spec import beta_ff_for_depth
from sigprop.recipes.base import BASE, CI, CPU_LONG, Context, Recipe, RunPlan, plan, seeds_for, variant

PLATEAU_LOSS = {"ci": 6.1, "cpu": 6.0, "paper": 6.0}  # ci: ln V = 6.24 at init, tiny models reach ~6.0 in 10 steps
#: the factors and their values; None = the base setting (beta_FF by the O(1/sqrt L) rule, lr 1e-3, batch 32, depth 4)
FACTORS: dict[str, tuple] = {"beta_ff": (0.05, 0.1, None, 0.5), "lr": (5e-4, None, 2e-3, 4e-3),
                             "batch_size": (16, None, 64), "depth": (2, None, 8)}
CI_FACTORS: dict[str, tuple] = {"beta_ff": (0.1, None), "lr": (None, 3e-3)}
#: probe_branches (a runtime field: run ids unchanged) adds the attention / MLP outputs to the probes of the base
#: setting's runs, for the collapse figure (+0.13 MB of records per run)
PLATEAU = CPU_LONG.replace(lr=1e-3, steps=400, schedule="constant", warmup=100, eval_every=10, eval_batches=4, probe_every=20,
                           ckpt_every=100, probe_branches=True)
PLATEAU_CI = CI.replace(steps=10, eval_every=1, warmup=2, schedule="constant", probe_branches=True)
#: a layer counts as collapsed while its tokens' mean cosine is above this
COLLAPSED = 0.9


def factors(scale: str) -> dict[str, tuple]:
    return CI_FACTORS if scale == "ci" else FACTORS


def runs(scale: str) -> list[RunPlan]:
    plans, seen = [], set()
    for factor, values in factors(scale).items():
        for v in values:
            for s in seeds_for(scale):
                over = {"seed": s} if v is None or factor == "beta_ff" else {"seed": s, factor: v}
                if v is not None:  # branch probes only where the collapse figure reads them: keeps the records small
                    over["probe_branches"] = False
                blocks = ("sas-p",) if factor == "beta_ff" else ("sas-p", "pre-ln")
                for b in blocks:
                    tag = "base" if v is None else f"{factor}{v:g}"
                    slug = f"{b}-{'base' if v is None else tag}-s{s}"
                    if slug in seen:
                        continue
                    seen.add(slug)
                    spec = variant("sas-p", "sas-p", beta_ff=v) if factor == "beta_ff" and v is not None else b
                    plans.append(plan(spec, slug, params={"factor": "base" if v is None else factor, "value": v, "seed": s}, **over))
    return plans


def tokens_to(metrics: pd.DataFrame, run: str, loss: float) -> float:
    """Tokens at the first eval with eval loss <= `loss` (NaN if the run never gets there)."""
    ev = metrics[(metrics.run == run) & metrics.eval_loss.notna()].sort_values("step")  # one record per step (load_runs)
    hit = ev[ev.eval_loss <= loss]
    return float(hit.tokens.iloc[0]) if len(hit) else math.nan


def cos_by_step(probes: pd.DataFrame, run: str, source: str) -> pd.Series:
    """step -> the largest cos_mean over layers of one run's `source` rows (probe: residual stream; mlp_out)."""
    d = probes[(probes.run == run) & (probes.source == source) & (probes.metric == "cos_mean") & (probes.layer > 0)]
    return d.groupby("step").value.max()


def collapse(ctx: Context, t: pd.DataFrame) -> dict:
    """The in-training rank collapse at the base setting (issue 10 item 5): cos_mean per layer x step of the residual
    stream and of the MLP output, Pre-LN vs SAS-P, for the first seed whose runs probed the branch outputs."""
    from sigprop.plots.paper import Line, plot_cos_heatmap

    p = ctx.runs.probes
    base = t[(t.factor == "base") & (t.status == "done")]
    for seed in sorted(base.seed.dropna().unique()):
        runs = {b: base[(base.block == b) & (base.seed == seed)].run for b in ("pre-ln", "sas-p")}
        if all(len(r) for r in runs.values()) and all((p[p.run == r.iloc[0]].source == "mlp_out").any() for r in runs.values()):
            break
    else:
        return {}
    runs = {b: r.iloc[0] for b, r in runs.items()}
    lines = [Line.of(runs[b], b, f"{lab}\n{what}") for what in ("residual stream", "MLP output")
             for b, lab in (("pre-ln", "Pre-LN"), ("sas-p", "SAS-P"))]
    plot_cos_heatmap(p, lines, ctx.out / "plateau_collapse", ctx.note(f"base setting, seed {int(seed)}; cos_mean of the "
                     f"probe tokens per layer (residual stream) and per block (MLP branch output)"),
                     sources=["probe", "probe", "mlp_out", "mlp_out"])
    out = {}
    for b, run in runs.items():
        resid, mlp = cos_by_step(p, run, "probe"), cos_by_step(p, run, "mlp_out")
        peak = int(resid.idxmax())
        after = resid[resid.index > peak]
        healed = after[after < COLLAPSED]
        out[b] = {"seed": int(seed), "resid_peak_cos": float(resid.max()), "resid_peak_step": peak,
                  "steps_collapsed": [int(s) for s in resid.index[resid > COLLAPSED]],
                  "healed_at_step": int(healed.index[0]) if len(healed) else None,
                  "mlp_out_peak_cos": float(mlp.max()), "mlp_out_peak_step": int(mlp.idxmax()),
                  "resid_final_cos": float(resid.iloc[-1]), "mlp_out_final_cos": float(mlp.iloc[-1])}
    return out


def _seeds_text(n: pd.Series) -> str:
    n = n[n > 0]
    lo, hi = (int(n.min()), int(n.max())) if len(n) else (0, 0)
    return f"{hi} seed{'s' * (hi != 1)}" if lo == hi else f"{lo}-{hi} seeds per point"


def make(ctx: Context) -> dict:
    from sigprop.plots.plateau import plot_plateau

    t = ctx.table()
    loss = PLATEAU_LOSS[ctx.scale]
    t = t.assign(tokens_to=[tokens_to(ctx.runs.metrics, r, loss) if s == "done" else math.nan
                            for r, s in zip(t.run, t.status)])
    rows = []
    for factor, values in factors(ctx.scale).items():
        for v in values:
            for b in ("sas-p",) if factor == "beta_ff" else ("sas-p", "pre-ln"):
                sel = t[(t.block == b) & (t.factor == ("base" if v is None else factor))]
                sel = sel[sel.value.isna()] if v is None else sel[sel.value == v]
                x = np.asarray(sel.tokens_to, dtype=float)
                shown = (beta_ff_for_depth(ctx.base.depth) if factor == "beta_ff" else getattr(ctx.base, factor)) if v is None else v
                rows.append({"factor": factor, "value": float(shown), "base": v is None, "block": b, "n": int(np.isfinite(x).sum()),
                             "mean": float(np.nanmean(x)) if np.isfinite(x).any() else math.nan,
                             "std": float(np.nanstd(x, ddof=1)) if np.isfinite(x).sum() > 1 else math.nan})
    frame = pd.DataFrame(rows)
    plot_plateau(frame, ctx.out / "plateau", ctx.note(f"{ctx.base.warmup_steps}-step warm-up; tokens to eval loss {loss:g}, "
                                                      f"mean ± std over {_seeds_text(frame.n)}"), loss)
    return {"numbers": {"plateau_loss": loss, "tokens_to_plateau_loss": frame.to_dict(orient="records"),
                        "collapse_at_base": collapse(ctx, t)}, "claims": []}


def tier(p: RunPlan) -> int:
    """Budget tier 2 (the plateau is item 5 of issue 10): SAS-P with 3 seeds at beta_FF 0.05 / 0.1 / 0.5, lr 4e-3 (the
    long scale's), batch 16 and depth 2 / 8, Pre-LN's reference at seed 0 off the base setting (its tokens to 6.0 vary
    by ~5% over seeds at the base: 478K +- 24K). Beyond the 24-hour budget: Pre-LN's other seeds there, lr 5e-4 and
    2e-3, batch 64 (twice a base run's cost), and depth 8's seeds 1-2 (its seed 0 leaves the plateau as depth 4 does;
    their hours went to the warm-up study, recipe `warmup`, after the GPU run showed warm-up decides it at 18 x 768)."""
    if (p.params.get("factor"), p.params.get("value")) in (("lr", 5e-4), ("lr", 2e-3), ("batch_size", 64)):
        return 3
    if (p.params.get("factor"), p.params.get("value")) == ("depth", 8) and p.params.get("seed") != 0:
        return 3
    return 3 if p.spec.name == "pre-ln" and p.params.get("factor") != "base" and p.params.get("seed") != 0 else 2


RECIPE = Recipe(
    name="plateau", paper="(sigprop)", claims=(), runs=runs, make=make, tier=tier,
    shows="tokens SAS-P and Pre-LN need to leave the early plateau vs beta_FF init, LR, batch and depth (3 seeds)",
    runtime={"ci": "~15 s", "cpu": "~50 runs x ~7 min (1 thread)", "paper": "not planned"},
    base={**BASE, "ci": PLATEAU_CI, "cpu": PLATEAU},
    partial=True,  # 57 runs trained over several days: the figure shows the settings whose runs are in
)
