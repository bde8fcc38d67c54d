"""sigprop's own: rank collapse at initialisation for every preset, measured (solid) with the
infinite-width theory overlaid (dashed), plus cosine-kernel heatmaps (claim 19: naive skipless attention
collapses the tokens with depth; SAS's identity attention keeps the embedding's geometry)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from sigprop.plots.signal import depth_curves
from sigprop.plots.style import savefig
from sigprop.recipes.base import Context, Recipe, RunPlan, verdict
from sigprop.studies.analysis import Analysis, analyze

#: analyze() settings per scale; ci and cpu read the same corpus caches as the training recipes
ANALYZE = {
    "ci": dict(depth=4, width=64, heads=2, seq_len=32, batch=2, vocab_size=512, max_bytes=1_000_000),
    "cpu": dict(depth=18, width=256, heads=4, seq_len=128, batch=4, vocab_size=8192),
    "paper": dict(depth=18, width=768, heads=12, seq_len=128, batch=8, vocab_size=8192),
}


def runs(scale: str) -> list[RunPlan]:
    return []


def make(ctx: Context) -> dict:
    a = analyze("all", progress=ctx.progress, cache_dir=ctx.cache_dir, **ANALYZE[ctx.scale])
    a.save(ctx.out)
    summary = a.summary()
    last = dict(zip(summary.block, summary["cos_mean[L]"].astype(float)))
    first = dict(zip(summary.block, summary["cos_mean[0]"].astype(float)))
    ok = last["skipless"] >= 0.9 and abs(last["sas"] - first["sas"]) <= 0.05
    ev = (f"cos_mean embedding -> last layer: skipless {first['skipless']:.2f} -> {last['skipless']:.2f}, "
          f"SAS {first['sas']:.2f} -> {last['sas']:.2f}, Pre-LN {first['pre-ln']:.2f} -> {last['pre-ln']:.2f}")
    err = summary.get("max |theory - measured| cos")
    return {"note": a.scale_text(), "numbers": {"cos_mean_last": last, "cos_mean_embedding": first, "verdicts": a.verdicts,
                                               "max_theory_error": dict(zip(summary.block, err.astype(float))) if err is not None else {}},
            "claims": [verdict(19, ok, ev)]}


def replot(folder: str | Path, metrics: tuple[str, ...] = ("cos_mean", "eff_rank")) -> list[Path]:
    """Redraw `<folder>/rank_collapse.{png,pdf}` of a saved analysis (this recipe's output, or `sigprop analyze --out`)
    from its own metrics.csv and analysis.json, without measuring again: the committed rank-collapse figures, the
    README's among them, are what their committed numbers draw."""
    folder = Path(folder)
    settings = json.loads((folder / "analysis.json").read_text())["settings"]
    note = Analysis.scale_text(SimpleNamespace(settings=settings))  # the stamp `analyze` wrote, from the same settings
    return savefig(depth_curves(pd.read_csv(folder / "metrics.csv"), metrics=metrics, note=note), folder / "rank_collapse")


RECIPE = Recipe(
    name="rank-collapse", paper="(sigprop)", claims=(19,), runs=runs, make=make,
    shows="cos_mean and effective rank vs depth at init for every preset, theory overlaid; kernel heatmaps",
    runtime={"ci": "~10 s", "cpu": "~1 min", "paper": "~3 min"},
)
