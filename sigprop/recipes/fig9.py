"""Fig. 9 (v2 only; App. A): final eval loss vs the ratio r of the W^V / W^P learning rate to every other
parameter's, identity vs orthogonal W_init, with Pre-LN and V-SkipInit as reference lines (claim 23).

App. A: training W = W_init + beta dW is, for SGD, training W at a learning rate scaled by beta^2, and under Adam
(one beta cancels in the preconditioner) by beta. So lowering only the values' and projections' learning rate
should help as a smaller fixed beta does in Fig. 3. The model is Fig. 3's skipless block with beta = 1 (W = W_init
+ dW, dW trained at r x the LR, `TrainConfig.vp_lr_mult`). Two verdicts, over 3 paired seeds with identity W_init:
r = DECIDE beats r = 1, and r = DECIDE matches Fig. 3's fixed beta = DECIDE at r = 1 (the Adam duality).
"""

from __future__ import annotations

import pandas as pd

from sigprop.plots.paper import plot_final_vs_knob
from sigprop.plots.style import block_style
from sigprop.recipes.base import Context, Recipe, RunPlan, final_by, final_loss, plan, seed_losses, seeds_for, verdict
from sigprop.recipes.fig3 import INITS, STYLES, reparam_spec
from sigprop.recipes.stats import paired_gap, verdict_for

RATIOS = {"ci": (0.2, 1.0), "cpu": (0.05, 0.2, 1.0), "paper": (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)}
#: the ratio whose identity-init runs take 3 seeds, against r = 1 and against fixed beta = DECIDE (Fig. 3's run)
DECIDE = 0.2


def runs(scale: str) -> list[RunPlan]:
    seeds = seeds_for(scale)
    plans = [plan("pre-ln", "pre-ln-s0", params={"seed": seeds[0]}, seed=seeds[0]),
             plan("v-skipinit", "v-skipinit-s0", params={"seed": seeds[0]}, seed=seeds[0])]
    for init in INITS:
        for r in RATIOS[scale]:
            for s in seeds if init == "identity" and r in (DECIDE, 1.0) else seeds[:1]:
                over = {"seed": s} if r == 1.0 else {"seed": s, "vp_lr_mult": r}
                plans.append(RunPlan(f"lr-ratio-{init}-r{r:g}-s{s}", reparam_spec(init, 1.0), over,
                                     f"{init}, W^V/W^P LR x{r:g}", {"init": init, "ratio": r, "seed": s}))
    for s in seeds:  # Fig. 3's fixed beta = DECIDE at the full LR: the other side of the duality
        plans.append(RunPlan(f"reparam-identity-b{DECIDE:g}-s{s}", reparam_spec("identity", DECIDE), {"seed": s},
                             f"identity, fixed beta={DECIDE:g}", {"init": "fixed-beta", "ratio": DECIDE, "seed": s}))
    return plans


def make(ctx: Context) -> dict:
    t, seeds = ctx.table(), seeds_for(ctx.scale)
    sweep = ctx.finished("lr-ratio-", seed=seeds[0])
    at = {r: seed_losses(ctx, f"lr-ratio-identity-r{r:g}-s{{}}", seeds) for r in (DECIDE, 1.0)}
    fixed = seed_losses(ctx, f"reparam-identity-b{DECIDE:g}-s{{}}", seeds)
    spread = pd.DataFrame([{"group": "identity", "ratio": r, "mean": pd.Series(v).mean(), "std": pd.Series(v).std()}
                           for r, v in at.items()]) if len(seeds) > 1 else None
    refs = [(block_style(b)["label"], final_loss(t, f"{b}-s0"), block_style(b)["color"]) for b in ("pre-ln", "v-skipinit")]
    refs.append((rf"identity, fixed $\beta = {DECIDE:g}$ (Fig. 3)", pd.Series(fixed).mean(), "0.45"))
    plot_final_vs_knob(sweep, "ratio", ctx.out / "fig9", ctx.note(f"beta = 1; lines: seed {seeds[0]}; error bars: "
                                                                 f"{len(seeds)} seed{'s' * (len(seeds) != 1)}"),
                       group="init", styles=STYLES, refs=refs, xlabel="LR of $W^V, W^P$ / LR of the rest", logx=True,
                       spread=spread)
    helps = paired_gap(at[DECIDE], at[1.0])
    dual = paired_gap(at[DECIDE], fixed)
    claims = [
        verdict(23, verdict_for(helps, "better"), f"identity W_init, LR ratio {DECIDE:g} vs 1: {helps.text()} "
                                                  f"(band ±{helps.band:.2f}%)"),
        verdict(23, verdict_for(dual, "matches"), f"Adam duality: LR ratio {DECIDE:g} at beta = 1 vs fixed beta = "
                                                  f"{DECIDE:g} at the full LR: {dual.text()} (band ±{dual.band:.2f}%)"),
    ]
    return {"numbers": {"final_eval_loss_seed0": final_by(sweep, "init", "ratio"), "identity_by_seed": {f"{r:g}": v for r, v in at.items()},
                        "fixed_beta_by_seed": fixed,
                        "ratio_gap_pct": helps.to_dict(),
                        "duality_gap_pct": dual.to_dict()},
            "claims": claims}


RECIPE = Recipe(
    name="fig9", paper="Fig. 9 (v2)", claims=(23,), runs=runs, make=make,
    shows="final eval loss vs the W^V/W^P learning-rate ratio, identity vs orthogonal W_init (App. A's duality)",
    runtime={"ci": "~15 s", "cpu": "15 runs x ~40 min (1 thread; 6 shared with fig15 and catch-up)", "paper": "not planned"},
    partial=True,  # the long scale, trained over several days
)
