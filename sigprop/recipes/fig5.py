"""Figs. 5 and 26: every block, eval loss vs wall-clock time (Fig. 5) and vs step (Fig. 26) on the same data
(claims 1, 8, 10, 11), decided over paired seeds.

At the cpu scale this is the long scale (4x128, 2,000 steps, `CPU_LONG`), each block at the best peak LR of the
catch-up study's grid where that grid has one (`catch_up.BEST_LR`), else at the long scale's 4e-3 (Parallel and
SAS-P without norms, which have no grid; SAS-P without norms also at half of it, `NONORM_LOW_LR`, since it
diverges at 4e-3 at two of three seeds). So the Pre-LN, SAS, SAS-P and V-SkipInit runs are the catch-up
study's own runs (same block and config, same run id): a gallery figure copies their records instead of
training them again. Per step, each claim is a paired gap in final eval loss over 3 seeds (`recipes.stats`);
in wall-clock, the paired gap in time per token, from each run's own clock.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from sigprop.plots.style import block_style
from sigprop.plots.training import machines, plot_loss_curves
from sigprop.recipes.base import Context, Recipe, RunPlan, final_loss, plan, seeds_for, verdict
from sigprop.recipes.catch_up import lr_for, peak_lr
from sigprop.recipes.records import FINISHED, overlap
from sigprop.recipes.stats import NOT_REPRODUCED, Gap, not_decidable, paired_gap, verdict_for

BLOCKS = ("pre-ln", "parallel", "v-skipinit", "sas", "sas-p", "sas-p-nonorm")
#: two runs' tokens/s compare only when they trained side by side for this fraction of the shorter one's time
SIDE_BY_SIDE = 0.8
SPEED_NOTE = " (paired over the seeds whose runs trained side by side; `sigprop bench` measures speed in one process)"
NORMED = ("pre-ln", "parallel", "sas", "sas-p")
#: SAS-P without norms left its plateau at only one of three seeds at the long scale's 4e-3 (seeds 0 and 2
#: diverged at step ~140), so at the cpu scale it also trains at this LR, where claim 11 is decided.
NONORM_LOW_LR = 2e-3
NONORM_LOW = f"sas-p-nonorm-lr{NONORM_LOW_LR:g}"  # its block name in run slugs: fmt.format(b=NONORM_LOW, s=seed)


def runs(scale: str) -> list[RunPlan]:
    plans = [plan(b, f"{b}-s{s}", params={"seed": s}, seed=s, **lr_for(b, scale)) for s in seeds_for(scale) for b in BLOCKS]
    if scale == "cpu":
        plans += [plan("sas-p-nonorm", f"{NONORM_LOW}-s{s}", params={"seed": s}, seed=s, lr=NONORM_LOW_LR)
                  for s in seeds_for(scale)]
    return plans


def gap_text(name: str, gap: Gap) -> str:
    return f"{name} {gap.text()}, band ±{gap.band:.2f}%"


def block_claims(ctx: Context, fmt: str = "{b}-s{s}", seeds: tuple[int, ...] | None = None) -> tuple[dict, list[dict]]:
    """Final eval loss and tokens/s per block and seed (run slug = fmt.format(b=block, s=seed)), the paired gaps to
    Pre-LN, and the verdicts on claims 1, 8, 10, 11. Fewer than 3 seeds decide nothing ('not decidable')."""
    seeds = seeds if seeds is not None else seeds_for(ctx.scale)
    t, s = ctx.table(), ctx.runs.summaries.set_index("run")
    done = set(t.slug[t.status.isin(FINISHED)])
    present = [b for b in BLOCKS if any(fmt.format(b=b, s=x) in done for x in seeds)]
    if "pre-ln" not in present:
        return {}, []  # nothing to compare with (a partial set of runs without the baseline)
    loss = {b: {x: final_loss(t, fmt.format(b=b, s=x)) for x in seeds} for b in present}
    tps = {b: {x: float(s.loc[run, "tokens_per_s"]) for x in seeds
               if (run := ctx.line(fmt.format(b=b, s=x))) in s.index} for b in present}
    spt = {b: {x: 1.0 / v for x, v in d.items() if v > 0} for b, d in tps.items()}  # seconds per token
    gap = {b: paired_gap(loss[b], loss["pre-ln"]) for b in present if b != "pre-ln"}

    def time_gap_of(b: str, base: str) -> Gap:
        """Time per token of b vs base (< 0: faster), over the seeds whose two runs trained side by side."""
        both = [x for x in spt.get(b, {}) if x in spt.get(base, {}) and overlap(
            ctx.runs.paths[ctx.line(fmt.format(b=b, s=x))], ctx.runs.paths[ctx.line(fmt.format(b=base, s=x))]) >= SIDE_BY_SIDE]
        return paired_gap({x: spt[b][x] for x in both}, {x: spt[base][x] for x in both})

    time_gap = {b: time_gap_of(b, "pre-ln") for b in present if b != "pre-ln"}
    claims = []
    if "v-skipinit" in gap:
        claims.append(verdict(1, verdict_for(gap["v-skipinit"], "worse"),
                              gap_text("final eval loss, V-SkipInit vs Pre-LN", gap["v-skipinit"])))
    if "sas" in gap:
        claims.append(verdict(8, verdict_for(gap["sas"], "matches"), gap_text("per step: SAS vs Pre-LN", gap["sas"])))
        claims.append(verdict(8, verdict_for(time_gap["sas"], "better"),
                              gap_text("wall-clock: SAS's time per token vs Pre-LN's", time_gap["sas"]) + SPEED_NOTE))
    if "sas-p" in gap:
        claims.append(verdict(10, verdict_for(gap["sas-p"], "matches"), gap_text("per step: SAS-P vs Pre-LN", gap["sas-p"])))
        if "parallel" in present:  # "... matching Parallel with fewer parameters"
            gap["sas-p-vs-parallel"] = paired_gap(loss["sas-p"], loss["parallel"])
            claims.append(verdict(10, verdict_for(gap["sas-p-vs-parallel"], "matches"),
                                  gap_text("per step: SAS-P vs Parallel", gap["sas-p-vs-parallel"])))
        # "the fastest normed block": SAS-P's time per token against every other normed block, each over the seeds
        # whose two runs trained side by side (runs from other sessions ran on other CPUs: their clocks do not compare)
        vs = {b: time_gap_of("sas-p", b) for b in NORMED if b != "sas-p" and b in present}
        unpaired = [b for b, g in vs.items() if g.n < len(seeds)]
        if unpaired or not vs:
            ok = not_decidable(f"{', '.join(unpaired) or 'no other normed block'} not trained beside SAS-P at every seed")
        else:  # decided by the rival SAS-P is least ahead of
            ok = verdict_for(vs[max(vs, key=lambda b: vs[b].mean)], "better")
        claims.append(verdict(10, ok, "runtime: SAS-P's time per token vs " + "; ".join(
            f"{b} {g.text()}" for b, g in vs.items()) + SPEED_NOTE))
    if "sas-p-nonorm" in gap:
        claims.append(_nonorm_claim(ctx, t, fmt, seeds, loss, gap))
    numbers = {
        "final_eval_loss": loss, "tokens_per_s": tps, "seeds": list(seeds),
        "loss_gap_pct": {b: g.to_dict() for b, g in gap.items()},
        "time_per_token_gap_pct": {b: g.to_dict() for b, g in time_gap.items()},
    }
    return numbers, claims


def _nonorm_claim(ctx: Context, t: pd.DataFrame, fmt: str, seeds: tuple[int, ...], loss: dict, gap: dict) -> dict:
    """Claim 11 (SAS-P without norms still trains, slightly worse per step than Pre-LN). Where it diverged at the
    shared LR, decided at NONORM_LOW_LR once that LR has finished at every seed (its loss and gap join `loss`, `gap`).
    t: the recipe's run table (`ctx.table()`)."""
    status = dict(zip(t.slug, t.status))

    def diverged_at(block: str) -> list[int]:
        return [x for x in seeds if status.get(fmt.format(b=block, s=x)) == "diverged"]

    diverged = diverged_at("sas-p-nonorm")
    if not diverged:
        return verdict(11, verdict_for(gap["sas-p-nonorm"], "worse"),
                       "trains at every seed; " + gap_text("per step: SAS-P no norm vs Pre-LN", gap["sas-p-nonorm"]))
    text = f"diverged at seed(s) {diverged}" + (f" at lr {peak_lr('sas-p-nonorm'):g}" if ctx.scale == "cpu" else "")
    low = [x for x in seeds if status.get(fmt.format(b=NONORM_LOW, s=x)) in FINISHED]
    if len(low) < len(seeds):
        return verdict(11, NOT_REPRODUCED, text + "; " + gap_text("per step: SAS-P no norm vs Pre-LN", gap["sas-p-nonorm"]))
    loss[NONORM_LOW] = {x: final_loss(t, fmt.format(b=NONORM_LOW, s=x)) for x in seeds}
    gap[NONORM_LOW] = paired_gap(loss[NONORM_LOW], loss["pre-ln"])
    low_div = diverged_at(NONORM_LOW)
    ok = NOT_REPRODUCED if low_div else verdict_for(gap[NONORM_LOW], "worse")
    return verdict(11, ok, text + (f"; at lr {NONORM_LOW_LR:g} diverged at seed(s) {low_div}" if low_div else
                                   f"; at lr {NONORM_LOW_LR:g} trains at every seed")
                   + "; " + gap_text(f"per step: SAS-P no norm at lr {NONORM_LOW_LR:g} vs Pre-LN", gap[NONORM_LOW]))


def drawn_runs(ctx: Context, seed: int) -> dict[str, str]:
    """block -> the run of `seed` that the figure draws: of the block's finished runs at that seed (SAS-P without
    norms also at NONORM_LOW_LR), the lowest final eval loss among those that did not diverge; a block whose every
    run diverged is drawn with that run (and labelled diverged by the plot), never as its best LR."""
    t = ctx.finished(seed=seed) if "seed" in ctx.table() else ctx.finished().iloc[:0]
    out = {}
    for b in BLOCKS:
        slugs = [f"{b}-s{seed}"] + ([f"{NONORM_LOW}-s{seed}"] if b == "sas-p-nonorm" else [])
        rows = t[t.slug.isin(slugs)]
        ok = rows[rows.status != "diverged"]
        pick = ok.loc[ok.final_eval_loss.astype(float).idxmin()] if len(ok) else (rows.iloc[0] if len(rows) else None)
        if pick is not None:
            out[b] = pick.run
    return out


def lr_stamp(lr: dict[str, float]) -> tuple[str, float]:
    """The stamp's lr of blocks that train at different LRs ('0.004, SAS-P no norm 0.002': the most common first,
    then each other block's), and that common LR."""
    common = max(set(lr.values()), key=list(lr.values()).count)
    return f"{common:g}" + "".join(f", {block_style(b)['label']} {v:g}" for b, v in lr.items() if v != common), common


def _lr_text(ctx: Context, drawn: dict[str, str], seed: int) -> tuple[str, str, dict[str, str]]:
    """From the drawn runs' own configs: the stamp's lr ('0.004' or '0.004, SAS-P no norm 0.002'), a sentence on
    why a block is drawn off the common LR (its runs at that LR diverged), and the legend label of such a block."""
    cfg = ctx.runs.configs.set_index("run")
    lr = {b: float(cfg.at[r, "train.lr"]) for b, r in drawn.items()}
    text, common = lr_stamp(lr)
    odd = {b: v for b, v in lr.items() if v != common}
    status = dict(zip(ctx.table().run, ctx.table().status))
    why = []
    for b in odd:
        gone = [r for r in ctx.finished(seed=seed).run if status.get(r) == "diverged" and cfg.at[r, "block"] == b]
        why += [f"{block_style(b)['label']} diverged at lr {float(cfg.at[r, 'train.lr']):g} (seed {seed})" for r in gone]
    labels = {drawn[b]: f"{block_style(b)['label']}, lr {v:g}" for b, v in odd.items()}
    return text, "; ".join(why), labels


def make(ctx: Context) -> dict:
    # Curves of the first seed only (one line per block), each block at the LR where it did best without diverging.
    # The time axis is each run's own training clock: the plot draws only the runs timed on Pre-LN's CPU.
    s0 = seeds_for(ctx.scale)[0]
    chosen = drawn_runs(ctx, s0)
    order = {r: i for i, r in enumerate(chosen.values())}
    cfg = ctx.runs.configs[ctx.runs.configs.run.isin(order)].sort_values("run", key=lambda c: c.map(order))
    drawn = dataclasses.replace(ctx.runs, configs=cfg)
    lr, why, labels = _lr_text(ctx, chosen, s0)
    where = machines(drawn)
    clocks = set(where.get(r) for r in chosen.values() if r in where)
    clock = ("time: each run's own clock" + ("; the time panel draws only the runs timed on Pre-LN's CPU" if len(clocks) > 1 else ""))
    extra = (f"seed {s0} drawn, each block at the LR of its lowest final loss among runs that did not diverge"
             + (f" ({why})" if why else "") + f"; {clock}")
    plot_loss_curves(drawn, ctx.out / "fig5_fig26", note=ctx.note(extra, lr=lr), headroom=1.0, labels=labels)
    numbers, claims = block_claims(ctx)
    return {"numbers": numbers, "claims": claims}


def tier(p: RunPlan) -> int:
    """Budget tier: every block decides claims 1, 8, 10; SAS-P without norms (claim 11) comes second."""
    return 2 if p.spec.name == "sas-p-nonorm" else 1


RECIPE = Recipe(
    name="fig5", paper="Figs. 5, 26", claims=(1, 8, 10, 11), runs=runs, make=make, tier=tier,
    shows="all blocks: eval loss vs training time (Fig. 5) and vs step (Fig. 26), 3 paired seeds",
    runtime={"ci": "~10 s", "cpu": "21 runs x ~35 min (1 thread; 12 shared with catch-up)", "paper": "18 x 10 h GPU"},
    partial=True,  # the long-scale runs are trained over several days; verdicts need every seed of a block
)
