"""Warm-up length at a high LR (sigprop's own, issue 10 item 5): does the paper's long warm-up close SAS-P's gap?

On one GPU at the paper's size (recipe `gpu`), SAS-P under a 75-step warm-up to lr 1e-3 collapsed (15 of 18 layers
at cos_mean 1.0) and never left the unigram loss in 1,500 steps, while under the paper's own schedule (2,000 warm-up
steps of 40K) it was level with Pre-LN. This recipe asks the same question where a CPU reaches, with seeds: at the
long cpu scale (4x128, 2,000 steps) and twice the best LR (8e-3, where a 100-step warm-up leaves SAS-P behind),
Pre-LN and SAS-P with the long scale's 5% warm-up and with a 50% warm-up (1,000 steps: half the run ramps, as the
paper's first 2,000 steps do). The 5% runs of seed 0 are the catch-up study's (shared, not retrained).
"""

from __future__ import annotations

import pandas as pd

from sigprop.plots.catchup import plot_gap_vs_tokens
from sigprop.plots.paper import Line, plot_loss
from sigprop.recipes.base import Context, Recipe, RunPlan, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.catch_up import gap_by_eval, reach_tokens
from sigprop.recipes.stats import NOT_REPRODUCED, REPRODUCED, Gap, paired_gap

BLOCKS = ("pre-ln", "sas-p")
WARMUPS = {"ci": (0.1, 0.5), "cpu": (0.05, 0.5)}
LR = {"ci": 3e-3, "cpu": 8e-3}


def slug_format(block: str, warmup: float) -> str:
    """A run's slug with '{}' for its seed (`seed_losses` fills it)."""
    return f"{block}-wu{warmup:g}-s{{}}"


def slug(block: str, warmup: float, seed: int) -> str:
    return slug_format(block, warmup).format(seed)


def runs(scale: str) -> list[RunPlan]:
    return [plan(b, slug(b, w, s), params={"seed": s, "warmup": w}, seed=s, lr=LR[scale], warmup=w)
            for s in seeds_for(scale) for w in WARMUPS[scale] for b in BLOCKS]


def curves(ctx: Context, warmup: float, seeds: list[int]) -> pd.DataFrame:
    """Per eval: SAS-P's gap to Pre-LN in %, mean and std over the seeds both finished (one panel per warm-up)."""
    pairs = {s: (ctx.line(slug("pre-ln", warmup, s)), ctx.line(slug("sas-p", warmup, s))) for s in seeds}
    return gap_by_eval(ctx.runs.metrics, pairs).assign(size=f"warm-up {warmup:.0%}", block="sas-p")


def claim24(short: Gap, long_: Gap) -> str:
    """Reproduced when the short warm-up leaves SAS-P behind beyond noise and the long one matches (or beats) Pre-LN;
    not decidable until both have 3 seeds."""
    outcomes = (short.outcome(), long_.outcome())
    undecided = [o for o in outcomes if o.startswith("not decidable")]
    if undecided:
        return undecided[0]
    return REPRODUCED if outcomes[0] == "worse" and outcomes[1] != "worse" else NOT_REPRODUCED


def make(ctx: Context) -> dict | None:
    seeds, warmups = seeds_for(ctx.scale), WARMUPS[ctx.scale]
    done = set(ctx.finished().slug)
    paired = {w: [s for s in seeds if {slug(b, w, s) for b in BLOCKS} <= done] for w in warmups}
    if not any(paired.values()):
        return None
    lr, steps = LR[ctx.scale], ctx.base.steps
    c = ctx.base
    size = f"{c.depth}x{c.width}"
    note = (f"warmup at scale {ctx.scale}: {size}, {c.heads} heads, V={c.vocab_size}, T={c.seq_len}, batch {c.batch_size}, "
            f"{steps} steps, peak lr {lr:g} (2x the long scale's best), warm-up {' vs '.join(f'{w:.0%}' for w in warmups)} "
            f"of the steps, then linear decay; data {c.source}; seeds per panel as titled")
    first = min(s for w in warmups for s in paired[w])
    lines = [Line.of(ctx.line(slug(b, w, first)), b, f"{'Pre-LN' if b == 'pre-ln' else 'SAS-P'}, warm-up {w:.0%}",
                     ls="-" if w == warmups[-1] else "--") for w in warmups if first in paired[w] for b in BLOCKS]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "warmup_loss", f"{note}; seed {first} drawn",
              panels=(("step", "eval_loss"),), zoom=0.3)
    frame = pd.concat([curves(ctx, w, paired[w]) for w in warmups if paired[w]], ignore_index=True)
    bands = {w: paired_gap(*(seed_losses(ctx, slug_format(b, w), seeds) for b in ("sas-p", "pre-ln"))) for w in warmups}
    reach = {k: x for k, x in reach_tokens(frame).items() if x is not None}
    plot_gap_vs_tokens(frame, ctx.out / "warmup_gap", note, reach=reach,
                       lrs={(f"warm-up {w:.0%}", b): lr for w in warmups for b in BLOCKS},
                       titles={f"warm-up {w:.0%}": f"{size}, warm-up {w:.0%} ({int(w * steps)} steps)" for w in warmups})
    loss = {f"{w:g}": {b: seed_losses(ctx, slug_format(b, w), seeds) for b in BLOCKS} for w in warmups}
    short, long_ = (bands[w] for w in warmups)
    evidence = (f"at lr {lr:g}, SAS-P vs Pre-LN final eval loss: warm-up {warmups[-1]:.0%} {long_.text()} (band "
                f"±{long_.band:.2f}%: {long_.outcome()}); warm-up {warmups[0]:.0%} {short.text()}"
                + (f" (band ±{short.band:.2f}%: {short.outcome()})" if short.n else ""))
    claims = [verdict(24, claim24(short, long_), evidence)] if long_.n else []
    return {
        "numbers": {"peak_lr": lr, "final_eval_loss": loss, "gap_pct": {f"{w:g}": bands[w].to_dict() for w in warmups},
                    "gap_pct_by_step": {size: dict(zip(map(str, g.step), g["mean"].round(3))) for size, g in frame.groupby("size")},
                    "tokens_to_within_band": {size: reach.get((size, "sas-p")) for size in frame["size"].unique()}},
        "claims": claims,
    }


RECIPE = Recipe(
    name="warmup", paper="(sigprop; the paper's 2,000-step warm-up)", claims=(24,), runs=runs, make=make, tier=2,
    shows="SAS-P vs Pre-LN at 2x the best LR under a 5% and a 50% warm-up: gap to Pre-LN vs tokens, 3 paired seeds",
    runtime={"ci": "~5 s", "cpu": "12 runs x ~25 min (1 thread; 2 shared with catch-up)", "paper": "12 x 10 h GPU"},
    partial=True, scales=("ci", "cpu"),
)
