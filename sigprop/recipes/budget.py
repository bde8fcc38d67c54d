"""What the whole gallery costs to train: every distinct run of every recipe at a scale, once (recipes share runs
by run id), with the CPU hours a finished run took (its summary) or an estimate for one still to train.

Issue 10 caps the cpu gallery at 24 hours on 2 cores, i.e. BUDGET_HOURS = 48 one-thread hours (two one-thread
runs side by side). The sessions that train it land on CPUs of different speed (so far an AVX-512 EPYC and an AVX2
one, ~1.6-2.6x apart per FLOP), so the cap is checked on the plan: every run's model FLOPs at the median measured
FLOP rate (`plan_hours`); what the finished runs really took is their measured wall time (`hours`).
`sigprop reproduce --budget` prints both; a test checks that the planned gallery fits.

    from sigprop.recipes.budget import gallery_budget
    table = gallery_budget("cpu")       # one row per distinct run: recipe, slug, status, hours, estimated
    table.plan_hours.sum()              # one-thread hours the whole gallery is planned to take
    table[table.status == "finished"].hours.sum()   # what the finished runs took, measured
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sigprop.perf.flops import BF16_SLOWDOWN, CPU_THREAD_RATE, config_flops_per_token
from sigprop.recipes.records import find_shared
from sigprop.runs import RunDir

#: one-thread CPU hours the cpu gallery may take in total (issue 10: 24 h on 2 cores, two 1-thread runs at a time)
BUDGET_HOURS = {"cpu": 48.0}
DEFAULT_RATE = CPU_THREAD_RATE
flops_per_token = config_flops_per_token  # the name the recipes and tests use


def gallery_budget(scale: str = "cpu", root: str | Path = "figures") -> pd.DataFrame:
    """One row per distinct run of the gallery at `scale`: recipe (the first that plans it), its slug and run folder
    there, the run id (shared by every recipe that plans the same block and config), tier
    (the highest priority any recipe gives it, `Recipe.tier`), status (finished | to train | pending: a staged
    study's later run, `Recipe.pending`), hours (one-thread wall hours: measured, or estimated from model FLOPs at the
    rate of the finished fp32 runs), estimated (bool), plan_hours (model FLOPs at that rate for every run, finished
    or not: the plan's cost, independent of which machine happened to run a finished run; the budget caps this)."""
    from sigprop.recipes import RECIPES
    from sigprop.recipes.executor import layout

    root = Path(root)
    search = sorted(d for d in root.glob("*/runs") if d.is_dir())
    rows, seen = [], {}
    for name in (n for n, r in RECIPES.items() if scale in r.scales):
        lay = layout(name, scale, root / name)
        recipe, out, base, plans, cfgs, folders = lay.recipe, lay.out, lay.base, lay.plans, lay.cfgs, lay.folders
        later = recipe.pending(scale) if recipe.pending is not None else []
        plans, cfgs = plans + later, cfgs + [p.config(base) for p in later]
        folders = folders + [f"{name}:{p.slug}:pending" for p in later]
        for p, cfg, folder in zip(plans, cfgs, folders):
            pending = folder.endswith(":pending")
            rid = folder if pending else folder.rsplit("-", 1)[-1]  # a pending run has no id yet
            if rid in seen:  # a shared run counts once, at the highest priority any recipe gives it
                row = rows[seen[rid]]
                row["tier"] = min(row["tier"], recipe.tier_of(p))
                continue
            seen[rid] = len(rows)
            done = None if pending else find_shared(folder, [out / "runs", *search])
            s = RunDir(done).summary() if done is not None else None
            rows.append({"recipe": name, "slug": p.slug, "run": folder, "id": rid, "tier": recipe.tier_of(p),
                         "steps": cfg.steps, "flops": flops_per_token(p.spec, cfg) * cfg.steps * cfg.tokens_per_step,
                         "bf16": cfg.precision == "bf16", "status": "finished" if s else "pending" if pending else "to train",
                         "hours": float(s["wall_time_s"]) / 3600 if s and s.get("wall_time_s") else None,
                         "whole": bool(s) and s.get("status") == "done"})
    t = pd.DataFrame(rows, columns=["recipe", "slug", "run", "id", "tier", "steps", "flops", "bf16", "status", "hours", "whole"])
    known = t[t.hours.notna() & ~t.bf16 & t.whole]  # a diverged run stopped early: its FLOPs/hour says nothing
    rate = float((known.flops / (known.hours * 3600)).median()) if len(known) else DEFAULT_RATE
    est = t.flops / rate / 3600 * t.bf16.map({True: BF16_SLOWDOWN, False: 1.0})
    t["estimated"] = t.hours.isna()
    t["hours"] = t.hours.fillna(est)
    t["plan_hours"] = est  # the same rule for every run, finished or not: the plan, whichever machine ran it
    return t.drop(columns=["flops", "bf16", "whole"])

