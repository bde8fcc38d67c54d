"""The paper's model size on one GPU: Pre-LN, SAS and SAS-P at 18 x 768, batch 128, T = 128 (issue 10, item 8).

Every CPU scale stops at width 128; this recipe trains the paper's width and depth at the paper's LR (1e-3) for as
long as a ten-minute call on one GPU allows (`recipes.base.GPU`, bf16), so the catch-up study's question -- does the
early plateau of SAS / SAS-P end, and is there per-step parity after it -- gets one answer at the paper's size:

- stage "short": 1,500 steps (24.6M tokens) with the 5% warm-up every cpu-scale run uses (75 steps), then linear
  decay; Pre-LN, SAS-P, SAS;
- stage "prefix": the first 1,200 steps of the paper's own schedule (2,000 warm-up steps of 40K); Pre-LN, SAS-P.

Stage "short" runs one seed (an indication: it shows the plateau becoming permanent); stage "prefix" plans
PREFIX_SEEDS (3 paired seeds at the gpu scale), so claim 10 at the paper's size is decided by the same +-2 std rule
as the cpu scale once all three finished -- until then its verdict says "not decidable (n seeds, need 3)". The figures
and result.json use whatever finished, so one GPU call can add the missing seeds (`ONLY='*-paper-prefix-s[12]'` in
benchmarks/gpu_scale.sh). The stamp names the device (from the runs' env.json); result.json has each block's
tokens/s from the training clocks of runs that trained one after another on it, and the collapse (layers with token
cos_mean above 0.9) at the last probe, both of seed 0.

    sigprop reproduce gpu --scale gpu              # on a machine with a GPU (benchmarks/gpu_scale.sh)
    sigprop reproduce gpu --scale gpu --replot     # anywhere: redraw from the committed records
"""

from __future__ import annotations

import pandas as pd

from sigprop.plots.catchup import plot_gap_vs_tokens
from sigprop.plots.paper import Line, plot_cos_heatmap, plot_loss
from sigprop.plots.style import block_style
from sigprop.recipes.base import PAPER, Context, Recipe, RunPlan, plan, seeds_for, verdict
from sigprop.recipes.plateau import COLLAPSED
from sigprop.recipes.catch_up import gap_by_eval, reach_tokens
from sigprop.recipes.stats import FLOOR_PCT, MIN_SEEDS, paired_gap, rel_gap, too_few_seeds, verdict_for
from sigprop.runs import ENV, read_json
from sigprop.training import TrainConfig

BLOCKS = ("pre-ln", "sas-p", "sas")  # trained in this order: the headline pair first, should a call run short
CLAIMS = {"sas": 8, "sas-p": 10}
#: the paper's own schedule, its first 1,200 steps: 2,000 warm-up steps of 40K to a peak of 1e-3, so the LR at step t
#: is 1e-3 t / 2000, i.e. a run of 1,200 steps whose 1,200-step warm-up peaks at 6e-4. Pre-LN and SAS-P only.
PREFIX_BLOCKS = ("pre-ln", "sas-p")
PREFIX = {"gpu": {"steps": 1200, "warmup": 1200, "lr": 1e-3 * 1200 / 2000}, "ci": {"warmup": 10, "lr": 6e-4}}
#: seeds of the prefix stage, the one that decides claim 10 at this size (ci: two, to test the seed statistics)
PREFIX_SEEDS = {"gpu": (0, 1, 2), "ci": (0, 1)}


def runs(scale: str) -> list[RunPlan]:
    short = [plan(b, f"{b}-s{s}", params={"seed": s, "stage": "short warm-up"}, seed=s) for s in seeds_for(scale) for b in BLOCKS]
    prefix = [plan(b, f"{b}-paper-prefix-s{s}", f"{block_style(b)['label']}, paper's warm-up", {"seed": s, "stage": "paper prefix"},
                   seed=s, **PREFIX[scale]) for s in PREFIX_SEEDS[scale] for b in PREFIX_BLOCKS]
    return short + prefix


STAGES = {"short": ("-s{}", BLOCKS), "prefix": ("-paper-prefix-s{}", PREFIX_BLOCKS)}


def stage_seeds(stage: str, scale: str) -> tuple[int, ...]:
    return PREFIX_SEEDS[scale] if stage == "prefix" else seeds_for(scale)


def title(stage: str, base: TrainConfig, scale: str) -> str:
    """'5% warm-up (75 steps) to lr 1e-3' | "the paper's schedule: its first 1,200 steps"."""
    if stage == "short":
        return f"{base.warmup:.0%} warm-up ({base.warmup_steps} steps) to lr {base.lr:g}"
    return f"the paper's schedule: its first {base.replace(**PREFIX[scale]).steps:,} steps"


def lr_reached(cfg: TrainConfig) -> float | str:
    """The peak LR a run reached, from its own config: its lr, or, where the run ends inside its warm-up (the paper's
    prefix: 1,200 of 2,000 warm-up steps), the lr it rose to by its last step, said as such."""
    return cfg.lr if cfg.warmup_steps < cfg.steps else f"lr rising to {cfg.lr:g}"


def panel_title(stage: str, cfg: TrainConfig, size: str) -> str:
    """The gap figure's panel title, two short lines: the schedule each stage's runs trained under."""
    if stage == "short":
        return f"{size}, {cfg.warmup_steps}-step warm-up\nto lr {cfg.lr:g}, then linear decay"
    return f"{size}, the paper's first {cfg.steps:,} steps\n(warm-up: lr {PAPER.lr:g} at step {PAPER.warmup_steps:,})"


def devices(ctx: Context) -> list[str]:
    """The device names the finished runs trained on (env.json), in plan order, without repeats."""
    names = []
    for run in ctx.finished().run:
        path = ctx.runs.paths.get(run)
        env = read_json(path / ENV) if path is not None and (path / ENV).is_file() else {}
        names.append(env.get("device_name") or env.get("device") or "?")
    return list(dict.fromkeys(names))


def stage_runs(ctx: Context, stage: str, seed: int) -> dict[str, str]:
    """block -> run folder of one stage's finished runs (done or diverged)."""
    suffix, blocks = STAGES[stage]
    done = set(ctx.finished().run)
    return {b: ctx.line(f"{b}{suffix.format(seed)}") for b in blocks if ctx.line(f"{b}{suffix.format(seed)}") in done}


def paired_seeds(ctx: Context, stage: str) -> dict[str, dict[int, tuple[str, str]]]:
    """block -> {seed: (Pre-LN run, run)} over the stage's seeds where both finished."""
    by_seed = {s: stage_runs(ctx, stage, s) for s in stage_seeds(stage, ctx.scale)}
    return {b: {s: (r["pre-ln"], r[b]) for s, r in by_seed.items() if "pre-ln" in r and b in r}
            for b in STAGES[stage][1] if b != "pre-ln"}


def gap_curves(ctx: Context, stage: str, paired: dict[str, dict[int, tuple[str, str]]]) -> pd.DataFrame:
    """Per eval of one stage: each block's eval-loss gap to Pre-LN in % (mean, std over its `paired_seeds`) and the
    tokens seen; the frame of the catch-up plot, one panel ('size') per stage."""
    frames = [gap_by_eval(ctx.runs.metrics, pairs).assign(size=stage, block=b) for b, pairs in paired.items() if pairs]
    return pd.concat(frames, ignore_index=True)[["size", "block", "step", "tokens", "mean", "std", "n"]]


def seed_gaps(ctx: Context, paired: dict[str, dict[int, tuple[str, str]]]) -> dict:
    """block -> the final eval-loss gap to Pre-LN over its `paired_seeds` (`stats.Gap`; diverged runs drop out)."""
    loss = ctx.table().set_index("run").final_eval_loss
    return {b: paired_gap({s: loss[r] for s, (_, r) in pairs.items()}, {s: loss[p] for s, (p, _) in pairs.items()})
            for b, pairs in paired.items() if pairs}


def collapse(ctx: Context, run: str) -> dict:
    """The largest cos_mean over layers (embedding excluded) at the last probe, and the layers above COLLAPSED there."""
    p = ctx.runs.probes
    d = p[(p.run == run) & (p.source == "probe") & (p.metric == "cos_mean") & (p.layer > 0)]
    last = d[d.step == d.step.max()]
    return {"step": int(last.step.max()), "max_cos_mean": round(float(last.value.max()), 3),
            "layers_collapsed": int((last.value > COLLAPSED).sum()), "layers": int(last.layer.nunique())}


def speeds(ctx: Context, runs: dict[str, str]) -> dict[str, dict]:
    """tokens/s of each block's step (training clock: no eval, no probes) and its ratio to Pre-LN's."""
    s = ctx.runs.summaries.set_index("run")
    tps = {b: float(s.tokens_per_s[r]) for b, r in runs.items()}
    return {b: {"tokens_per_s": round(v), "vs_pre_ln": round(v / tps["pre-ln"], 3) if "pre-ln" in tps else None}
            for b, v in tps.items()}


def stage_numbers(ctx: Context, runs: dict[str, str]) -> dict:
    """One stage's schedule, final losses, status, gap to Pre-LN (%), collapse at the last probe and tokens/s."""
    table = ctx.table().set_index("run")
    cfg = ctx.plans[ctx.folders.index(runs["pre-ln"])].config(ctx.base)
    final = {b: table.final_eval_loss[r] for b, r in runs.items()}
    return {
        "steps": cfg.steps, "peak_lr": cfg.lr, "warmup_steps": cfg.warmup_steps, "final_eval_loss": final,
        "status": {b: table.status[r] for b, r in runs.items()},
        "stopped_at_step": {b: int(table.step[r]) for b, r in runs.items()},
        "gap_pct": {b: round(rel_gap(v, final["pre-ln"]), 2) for b, v in final.items() if b != "pre-ln"},
        "collapse": {b: collapse(ctx, r) for b, r in runs.items()},
        "speed": speeds(ctx, runs),
    }


def seeds_text(seeds: list[int]) -> str:
    """'seed 0 (one seed: an indication, not a verdict)' | 'seeds 0, 1, 2 (mean ± std)'."""
    if len(seeds) == 1:
        return f"seed {seeds[0]} (one seed: an indication, not a verdict)"
    return f"seeds {', '.join(map(str, seeds))} (mean ± std)"


def stamp(ctx: Context, where: str, seeds: dict[str, list[int]]) -> str:
    """The figures' scale stamp: model, data, device, and both stages' schedules and seeds."""
    c = ctx.base
    data = f"data {c.source}" + (f" ≤{c.max_bytes / 1e6:g} MB" if c.max_bytes else "")
    stage1 = (f"Stage 1, {title('short', c, ctx.scale)}: {c.steps} steps, linear decay, {seeds_text(seeds['short'])}."
              if seeds.get("short") else "")
    stage2 = (f"Stage 2, {title('prefix', c, ctx.scale)}: a 2,000-step warm-up to 1e-3 of 40K steps, "
              f"{seeds_text(seeds['prefix'])}." if seeds.get("prefix") else "")
    return (f"gpu at scale {ctx.scale}: {c.depth}x{c.width}, {c.heads} heads, V={c.vocab_size}, T={c.seq_len}, batch "
            f"{c.batch_size}, {data}, bf16 on {where}. " + " ".join(t for t in (stage1, stage2) if t))


def make(ctx: Context) -> dict | None:
    seed, c = seeds_for(ctx.scale)[0], ctx.base
    stages = {st: stage_runs(ctx, st, seed) for st in STAGES}
    stages = {st: r for st, r in stages.items() if "pre-ln" in r and len(r) > 1}
    if not stages:
        return None  # nothing to compare against yet
    where, size = ", ".join(devices(ctx)), f"{c.depth}x{c.width}"
    paired = {st: paired_seeds(ctx, st) for st in stages}
    gaps = {st: seed_gaps(ctx, paired[st]) for st in stages}
    note = stamp(ctx, where, {st: sorted({s for g in paired[st].values() for s in g}) for st in stages})
    numbers: dict = {"device": where}
    for st, runs in stages.items():
        numbers[st] = stage_numbers(ctx, runs)
        plot_loss(ctx.runs.metrics, [Line.of(r, b) for b, r in runs.items()], ctx.out / f"gpu_{st}",
                  f"Stage: {title(st, c, ctx.scale)}, curves of seed {seed}. {note}", panels=(("step", "loss"), ("step", "eval_loss")),
                  titles=("train", "eval"))
    curves = pd.concat([gap_curves(ctx, st, paired[st]) for st in stages], ignore_index=True)
    reach = reach_tokens(curves, fixed=FLOOR_PCT)
    cfgs = {st: ctx.plans[ctx.folders.index(runs["pre-ln"])].config(c) for st, runs in stages.items()}
    lrs = {(st, b): lr_reached(cfgs[st]) for st, runs in stages.items() for b in runs}
    gone = {(st, b): int(numbers[st]["stopped_at_step"][b]) for st in stages for b, v in numbers[st]["status"].items()
            if v == "diverged"}
    plot_gap_vs_tokens(curves, ctx.out / "gpu_gap", note, reach={k: v for k, v in reach.items() if v is not None}, lrs=lrs,
                       titles={st: panel_title(st, cfgs[st], size) for st in stages}, cap=200.0, diverged=gone)
    short = f"{c.warmup_steps}-step warm-up"
    heat = [Line.of(r, b, f"{block_style(b)['label']}\n{'paper warm-up' if st == 'prefix' else short}")
            for st, runs in stages.items() for b, r in runs.items() if b in PREFIX_BLOCKS]
    plot_cos_heatmap(ctx.runs.probes, heat, ctx.out / "gpu_collapse", f"Token cos_mean per layer x step, seed {seed}. {note}")
    for st in stages:
        d = curves[curves["size"] == st]
        numbers[st]["gap_pct_by_step"] = {b: dict(zip(map(str, g.step), g["mean"].round(3))) for b, g in d.groupby("block")}
        numbers[st]["tokens_to_within_floor"] = {b: reach.get((st, b)) for b in d.block.unique()}
        numbers[st]["gap_over_seeds"] = {b: g.to_dict() for b, g in gaps[st].items()}
    claims = []
    for b, claim in CLAIMS.items():
        st = next((st for st in ("prefix", "short") if b in gaps.get(st, {})), None)
        if st is None:
            continue
        ran = len(paired[st][b])  # a diverged seed ran but has no final loss: it cannot count as a match
        decided = verdict_for(gaps[st][b], "matches") if ran >= MIN_SEEDS else too_few_seeds(ran)
        parts = [f"{title(k, c, ctx.scale)}: " + (gaps[k][b].text() if gaps[k][b].n else
                 f"diverged at step {numbers[k]['stopped_at_step'][b]} (seed {seed})") for k in stages if b in gaps[k]]
        claims.append(verdict(claim, decided, f"{b} vs Pre-LN at {size} on {where}, final eval loss gap: " + "; ".join(parts)))
    return {"numbers": numbers, "claims": claims}


RECIPE = Recipe(
    name="gpu", paper="Fig. 5 at the paper's size", claims=(8, 10), runs=runs, make=make, tier=3, scales=("ci", "gpu"),
    shows="Pre-LN, SAS, SAS-P at 18x768, batch 128 on one GPU, under a 75-step and the paper's 2,000-step warm-up: loss, "
          "gap to Pre-LN vs tokens, token collapse per layer (stage 1: 1 seed; stage 2: 3 seeds)",
    runtime={"ci": "~10 s", "gpu": "9 runs x 1.5-2 min (H200)"},
    partial=True,  # drawn from whatever finished, should one call end before SAS
)
