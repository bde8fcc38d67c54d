"""Fig. 6: depth scaling. The same blocks at a shallow and a deep depth, at the same peak LR (paper: 18 vs 72
blocks, MLP width 2d, lr 1e-3), loss per step (claim 13): SAS and SAS-P improve with depth and stay close to
Pre-LN, while V-SkipInit falls further behind.

At the cpu scale: the long scale at depth 4 and 12 (MLP 4d, so that the runs are the catch-up study's: same
block and config, same run id), each block at its 4x128 catch-up LR at both depths, 3 paired seeds. Where a block
does not train at depth 12 at that LR (SAS-P diverged at 4e-3), it also runs at its catch-up LR at 12x128
(`DEEP_LR`), so the verdict says how it does with depth at an LR where it trains, as well as at the paper's one LR.
"""

from __future__ import annotations

from sigprop.plots.paper import Line, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, diverged_seeds, seed_losses, seeds_for, variant, verdict
from sigprop.recipes.catch_up import BEST_LR, lr_for, peak_lr
from sigprop.recipes.stats import Gap, paired_gap, verdict_for

DEPTHS = {"ci": (1, 2), "cpu": (4, 12), "paper": (18, 72)}
MLP = {"ci": 2.0, "cpu": 4.0, "paper": 2.0}
BLOCKS = {"ci": ("pre-ln", "sas", "v-skipinit"), "cpu": ("pre-ln", "sas", "sas-p", "v-skipinit"),
          "paper": ("pre-ln", "sas", "sas-p", "sas-p-nonorm", "v-skipinit")}
#: block -> its catch-up LR at the deep depth, where that differs from its depth-4 LR (cpu scale only)
DEEP_LR = {b: lr for (size, b), lr in BEST_LR.items() if size == "12x128" and lr != peak_lr(b)}


def deep_lrs(scale: str) -> dict[str, float]:
    """The blocks of `scale` that also run at their own deep LR (`DEEP_LR`), and that LR; none off the cpu scale."""
    return {b: lr for b, lr in DEEP_LR.items() if b in BLOCKS[scale]} if scale == "cpu" else {}


def runs(scale: str) -> list[RunPlan]:
    plans = [RunPlan(f"{b}-L{L}-s{s}", variant(b, b, mlp_mult=MLP[scale]), {**lr_for(b, scale), "depth": L, "seed": s},
                     f"{block_style(b)['label']}, L={L}", {"depth": L, "base": b, "seed": s})
             for s in seeds_for(scale) for L in DEPTHS[scale] for b in BLOCKS[scale]]
    deep = DEPTHS[scale][1]
    plans += [RunPlan(f"{b}-L{deep}-lr{lr:g}-s{s}", variant(b, b, mlp_mult=MLP[scale]), {"lr": lr, "depth": deep, "seed": s},
                      f"{block_style(b)['label']}, L={deep}, lr {lr:g}", {"depth": deep, "base": b, "seed": s, "lr": lr})
              for s in seeds_for(scale) for b, lr in deep_lrs(scale).items()]
    return plans


def _diverged(ctx: Context, slug_format: str, seeds: tuple[int, ...]) -> str:
    """' (diverged at seeds 0, 2)' for the runs that diverged, else ''."""
    bad = diverged_seeds(ctx, slug_format, seeds)
    return f" (diverged at seed{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))})" if bad else ""


def make(ctx: Context) -> dict:
    shallow, deep = DEPTHS[ctx.scale]
    blocks, seeds = BLOCKS[ctx.scale], seeds_for(ctx.scale)
    lines = [Line.of(ctx.line(f"{b}-L{L}-s{seeds[0]}"), b, f"{block_style(b)['label']}, L={L}", ls="-" if L == shallow else "--")
             for b in blocks for L in (shallow, deep)]
    plot_loss(ctx.runs.metrics, lines, ctx.out / "fig6", ctx.note(f"depth {shallow} (solid) vs {deep} (dashed), MLP "
                                                                 f"{MLP[ctx.scale]:g}d; seed {seeds[0]} drawn", depth=f"{shallow}|{deep}"))
    loss = {b: {L: seed_losses(ctx, f"{b}-L{L}-s{{}}", seeds) for L in (shallow, deep)} for b in blocks}
    to_pre = {L: {b: paired_gap(loss[b][L], loss["pre-ln"][L]) for b in blocks if b != "pre-ln"} for L in (shallow, deep)}
    claims = []
    div = {b: _diverged(ctx, f"{b}-L{deep}-s{{}}", seeds) for b in blocks}
    with_depth = {b: paired_gap(loss[b][deep], loss[b][shallow]) for b in blocks if b != "v-skipinit"}
    for b, g in with_depth.items():
        claims.append(verdict(13, verdict_for(g, "better"), f"{b}: L={deep} vs L={shallow} {g.text()}{div[b]} (band ±{g.band:.2f}%)"))
    for b in [b for b in blocks if b in ("sas", "sas-p")]:
        g = to_pre[deep][b]
        claims.append(verdict(13, verdict_for(g, "matches"), f"{b} vs Pre-LN at L={deep}: {g.text()}{div[b]} (band ±{g.band:.2f}%)"))
    own = {}  # the blocks that also run at their own deep LR: with depth, and against Pre-LN, at an LR where they train
    for b, lr in deep_lrs(ctx.scale).items():
        own[b] = seed_losses(ctx, f"{b}-L{deep}-lr{lr:g}-s{{}}", seeds)
        g, v = paired_gap(own[b], loss[b][shallow]), paired_gap(own[b], loss["pre-ln"][deep])
        claims.append(verdict(13, verdict_for(g, "better"), f"{b} at lr {lr:g}: L={deep} vs L={shallow} (lr {peak_lr(b):g}) "
                                                             f"{g.text()} (band ±{g.band:.2f}%); Pre-LN's gain with depth "
                                                             f"{with_depth['pre-ln'].text()}"))
        claims.append(verdict(13, verdict_for(v, "matches"), f"{b} at lr {lr:g} vs Pre-LN at L={deep}: {v.text()} (band ±{v.band:.2f}%)"))
    if "v-skipinit" in blocks:  # its gap to Pre-LN grows with depth: the per-seed change of the gap, in points
        a, z = to_pre[shallow]["v-skipinit"], to_pre[deep]["v-skipinit"]
        grows = Gap(tuple(d - s for d, s in zip(z.values, a.values))) if a.n == z.n else Gap(())
        claims.append(verdict(13, verdict_for(grows, "worse"), f"V-SkipInit's gap to Pre-LN: L={shallow} {a.text()}, "
                                                               f"L={deep} {z.text()}; change {grows.text()} (points)"))
    return {"numbers": {"final_eval_loss": {b: {str(L): v for L, v in d.items()} for b, d in loss.items()},
                        "final_eval_loss_at_deep_lr": {f"{b} lr {DEEP_LR[b]:g}": v for b, v in own.items()},
                        "gap_to_pre_ln_pct": {str(L): {b: g.to_dict() for b, g in d.items()} for L, d in to_pre.items()}},
            "claims": claims}


def tier(p: RunPlan) -> int:
    """Budget tier: Pre-LN at depth 12 is the catch-up study's (tier 1, 3 seeds). SAS-P at depth 12 and depth 4's LR
    (4e-3) diverged at seed 0 (step 338), so its other seeds at 4e-3 are tier 3; at 2e-3 (`DEEP_LR`) its 3 seeds are
    the catch-up study's (tier 1).
    V-SkipInit there runs 3 seeds (tier 2: whether its gap to Pre-LN grows with depth, claim 13); SAS at depth 12
    lies beyond the 24-hour budget."""
    if p.params["depth"] == DEPTHS["cpu"][0] or p.params["base"] == "pre-ln" or (p.params["base"] == "sas-p" and p.params["seed"] == 0):
        return 1
    if "lr" in p.params:
        return 1
    return 2 if p.params["base"] == "v-skipinit" else 3


RECIPE = Recipe(
    name="fig6", paper="Fig. 6", claims=(13,), runs=runs, make=make, tier=tier,
    shows="depth scaling: loss per step at two depths, same LR, for Pre-LN, SAS, SAS-P, V-SkipInit",
    runtime={"ci": "~10 s", "cpu": "24 runs: 12 at depth 4 (~40 min, from catch-up) and 12 at depth 12 (~90 min)",
             "paper": "10 runs, GPU days"},
    partial=True,  # the long scale, trained over several days
)
