"""Two variants per block over paired seeds (figs. 12 and 13): the runs, and the figure and verdicts that compare them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sigprop.blocks import BlockSpec, get_spec
from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, RunPlan, seed_losses, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for
from sigprop.recipes.stats import paired_gap, verdict_for


@dataclass(frozen=True)
class Side:
    """One of two variants that `pairwise` compares per block."""

    suffix: str  # its run slug is block + suffix
    key: str  # its name in result.json
    label: str  # legend text after the block's label
    word: str  # its name in the evidence text
    ls: str = "-"


def pairwise_runs(blocks: tuple[str, ...], sides: dict[str, Callable[[str], tuple[BlockSpec | str, dict, str]]],
                  scale: str) -> list[RunPlan]:
    """Every block x side x seed: side suffix -> f(block) = (spec, config overrides, legend label); run slug
    block + suffix + '-s{seed}', each at the block's long-scale LR (`catch_up.lr_for`)."""
    plans = []
    for s in seeds_for(scale):
        for b in blocks:
            for suffix, side in sides.items():
                spec, over, label = side(b)
                plans.append(RunPlan(f"{b}{suffix}-s{s}", get_spec(spec), {**lr_for(b, scale), **over, "seed": s}, label,
                                     {"seed": s}))
    return plans


def pairwise(ctx: Context, blocks: tuple[str, ...], better: Side, worse: Side, name: str, note: str, claim: int) -> dict:
    """Two variants per block over paired seeds (slugs block + suffix + '-s{seed}'): eval loss per step of the first
    seed with a zoom on the end; per block, the claim holds when `better` ends lower than `worse` beyond seed noise
    (figs. 12 and 13; `recipes.stats`)."""
    seeds, sides = seeds_for(ctx.scale), (better, worse)
    lines = [Line.of(ctx.line(f"{b}{sd.suffix}-s{seeds[0]}"), b, f"{block_style(b)['label']}, {sd.label}", ls=sd.ls)
             for sd in sides for b in blocks]
    plot_loss(ctx.runs.metrics, lines, ctx.out / name, ctx.note(f"{note}; seed {seeds[0]} drawn, verdicts over {len(seeds)} "
                                                                f"seed{'s' * (len(seeds) != 1)}"),
              panels=(("step", "eval_loss"),), zoom=0.3)
    loss = {b: {sd.key: seed_losses(ctx, f"{b}{sd.suffix}-s{{}}", seeds) for sd in sides} for b in blocks}
    gaps = {b: paired_gap(d[better.key], d[worse.key]) for b, d in loss.items()}
    claims = [verdict(claim, verdict_for(g, "better"), f"{b}: {better.word} vs {worse.word}, final eval loss {g.text()} "
                                                       f"(band ±{g.band:.2f}%)") for b, g in gaps.items()]
    return {"numbers": {"final_eval_loss": loss, "gap_pct": {b: g.to_dict() for b, g in gaps.items()}},
            "claims": claims}
