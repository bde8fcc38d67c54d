"""sigprop's own: token cos_mean per layer through training (layer x step heatmap) for Pre-LN, naive
skipless attention and SAS-P (claim 20): does rank collapse appear, persist or heal during training?

At the cpu scale: the long scale (shared with the catch-up study for Pre-LN and SAS-P, 3 seeds; naive skipless,
the contrast, one seed). The early transient is drawn densely by the plateau study (probes every 20 steps)."""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_cos_heatmap
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import MIN_SEEDS, too_few_seeds

BLOCKS = ("pre-ln", "skipless", "sas-p")
COLLAPSED = 0.9


def runs(scale: str) -> list[RunPlan]:
    seeds = seeds_for(scale)
    return [plan(b, f"{b}-s{s}", params={"seed": s}, seed=s, **lr_for(b, scale))
            for s in seeds for b in BLOCKS if b != "skipless" or s == seeds[0]]


def stamp(ctx: Context, drawn: dict[str, str], last: dict[str, dict[int, float]]) -> tuple[str, dict[str, str]]:
    """The stamp and panel titles from the data: each panel's seed from its run's config, and the seeds the
    numbers of result.json (claim 20) read, per block."""
    seed = dict(zip(ctx.runs.configs.run, ctx.runs.configs["train.seed"]))
    titles = {b: f"{block_style(b)['label']}, seed {int(seed[r])}" for b, r in drawn.items() if r in seed}
    drew = sorted({int(seed[r]) for r in drawn.values() if r in seed})
    numbers = "; ".join(f"{block_style(b)['label']} {', '.join(map(str, s))}" for b, s in last.items())
    text = (f"heatmaps: one run each, seed {', '.join(map(str, drew))}; claim 20's numbers (result.json) over seeds: "
            f"{numbers}")
    return text, titles


def make(ctx: Context) -> dict:
    seeds, p = seeds_for(ctx.scale), ctx.runs.probes
    cos = p[(p.source == "probe") & (p.metric == "cos_mean")]
    done = set(ctx.finished().slug)
    peak, last = {}, {}
    for b in BLOCKS:
        for s in seeds:
            if f"{b}-s{s}" in done:
                d = cos[cos.run == ctx.line(f"{b}-s{s}")]
                peak.setdefault(b, {})[s] = float(d.value.max())
                last.setdefault(b, {})[s] = float(d[d.step == d.step.max()].value.max())
    drawn = {b: ctx.line(f"{b}-s{seeds[0]}") for b in BLOCKS}
    text, titles = stamp(ctx, drawn, last)
    lines = [Line.of(r, b, titles.get(b)) for b, r in drawn.items()]
    plot_cos_heatmap(p, lines, ctx.out / "cos_training", ctx.note(text))
    # the claim is about where training ends up: a transient alignment early in training is allowed (and shown)
    n = min(len(last.get(b, {})) for b in ("pre-ln", "sas-p"))
    ok = all(v < COLLAPSED for b in ("pre-ln", "sas-p") for v in last.get(b, {}).values())
    if n < MIN_SEEDS:
        ok = too_few_seeds(n, " of Pre-LN and SAS-P")
    ev = "; ".join(f"{b}: max cos_mean over layers at the last step " + ", ".join(f"{v:.2f}" for v in last[b].values())
                   + " (peak during training " + ", ".join(f"{v:.2f}" for v in peak[b].values()) + ")" for b in last)
    return {"numbers": {"max_cos_mean": peak, "final_max_cos_mean": last}, "claims": [verdict(20, ok, ev + " (per seed)")]}


RECIPE = Recipe(
    name="cos-training", paper="(sigprop)", claims=(20,), runs=runs, make=make, tier=2,
    shows="token cos_mean per layer through training (heatmap) for Pre-LN, naive skipless, SAS-P",
    runtime={"ci": "~5 s", "cpu": "7 runs x ~40 min (1 thread; 6 shared with catch-up)", "paper": "7 x 10 h GPU"},
    partial=True,  # the long scale, trained over several days
)
