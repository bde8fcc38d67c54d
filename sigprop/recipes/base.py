"""What a recipe is, and the one executor every recipe shares.

A recipe is declarative: a name, its paper counterpart ("Fig. 3"), the claims of paper.md §6 it tests,
the runs it needs at each scale (`RunPlan`: a block spec + TrainConfig overrides), and a `make` function
that reads the finished runs (as `load_runs` frames) and writes figures plus the deciding numbers.

    result = reproduce("fig3", scale="cpu", out="figures/fig3", runs_dir="runs/recipes")

Runs live in `<runs_dir>/<slug>-<hash>`; the hash covers the block's knobs and every TrainConfig field
that changes the numbers, so recipes that need the same run share it, a finished run is never retrained,
an unfinished one is resumed, and a different experiment can never be mistaken for it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sigprop.blocks import BlockSpec, get_spec
from sigprop.blocks.spec import KNOBS_OMIT_AT_DEFAULT
from sigprop.errors import SigpropError, check_choice
from sigprop.recipes.records import FINISHED, copy_records, find_shared, thin_metrics
from sigprop.runs import CONFIG, RunDir, Runs, atomic_write_json, load_runs
from sigprop.training import SCALES, TrainConfig
from sigprop.training.config import HASH_OMIT_AT_DEFAULT, RUNTIME_FIELDS

RECIPE_SCALES = ("ci", "cpu", "paper")

# ------------------------------------------------------------------------------------------------
# Base training configs per scale
# ------------------------------------------------------------------------------------------------

#: ci: seconds per run (the test suite); probes at steps 0, 5, 10 so gain trajectories have 3 points.
CI = SCALES["ci"].replace(steps=10, eval_every=5, eval_batches=1, probe_every=5, probe_batch=2, ckpt_every=10)
#: cpu: minutes per run (4x128, T=64, batch 16, 200 steps: 0.52 s/step measured with a free core, ~2 s/step on a busy one).
CPU = SCALES["cpu"].replace(
    depth=4, width=128, heads=4, vocab_size=8192, seq_len=64, batch_size=16, steps=200, eval_every=25,
    eval_batches=4, probe_every=25, probe_batch=4, ckpt_every=50, precision="fp32",
)
#: cpu, long: the scale where per-step claims get decided (issue 10): 2,000 steps x 4,096 tokens = 8.2M tokens at
#: 4x128, T=128, batch 32, with a 4,096-token BPE vocabulary so that the blocks, not the tied LM head, carry most
#: of a step's FLOPs. Dense evals early (every 50 steps) for the log-token catch-up curves; thin probes. Peak LR
#: 4e-3: the best of the catch-up grid 1e-3..8e-3 for both Pre-LN and SAS-P at this size (the paper's 1e-3 is
#: 0.27 / 0.35 nats worse there), so the long-scale recipes share the catch-up study's runs at it.
CPU_LONG = SCALES["cpu"].replace(
    lr=4e-3, depth=4, width=128, heads=4, vocab_size=4096, seq_len=128, batch_size=32, steps=2000, eval_every=50,
    eval_batches=8, probe_every=100, probe_batch=4, ckpt_every=200, precision="fp32",
)
#: paper: the CodeParrot setting of paper.md §3.1 (18x768, T=128, batch 128, 40K steps); needs a GPU.
PAPER = SCALES["paper"]
BASE: dict[str, TrainConfig] = {"ci": CI, "cpu": CPU, "paper": PAPER}


@dataclass(frozen=True)
class RunPlan:
    """One training run a recipe needs: a slug (readable folder prefix), the block, config overrides,
    a legend label, and the knob values the plot groups by (e.g. {"init": "identity", "beta": 0.2})."""

    slug: str
    spec: BlockSpec
    overrides: dict = field(default_factory=dict)
    label: str = ""
    params: dict = field(default_factory=dict)

    def config(self, base: TrainConfig) -> TrainConfig:
        return base.replace(**self.overrides)


def plan(block: str | BlockSpec, slug: str | None = None, label: str | None = None, params: dict | None = None,
         **overrides: object) -> RunPlan:
    """Shorthand: plan("sas", schedule="cosine") -> RunPlan for the SAS preset with a cosine schedule."""
    spec = get_spec(block)
    from sigprop.plots.style import block_style

    return RunPlan(slug or spec.name, spec, dict(overrides), label or block_style(spec.name)["label"], dict(params or {}))


def variant(base: str, name: str, **knobs: object) -> BlockSpec:
    """A preset with some knobs changed, keeping the preset's name (so it keeps its paper colour)."""
    return dataclasses.replace(get_spec(base).replace(**knobs), name=name)


def run_id(spec: BlockSpec, cfg: TrainConfig) -> str:
    """8 hex digits over the block knobs and the config fields that change the numbers."""
    default = TrainConfig()
    train = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS and k != "scale"
             and not (k in HASH_OMIT_AT_DEFAULT and v == getattr(default, k))}
    plain = BlockSpec()
    knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.knobs().items()
             if not (k in KNOBS_OMIT_AT_DEFAULT and v == getattr(plain, k))}
    text = json.dumps({"spec": knobs, "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass
class Context:
    """What a recipe's `make` sees: its finished runs as frames, one row per plan, and where to write."""

    recipe: Recipe
    scale: str
    out: Path
    base: TrainConfig
    plans: list[RunPlan]
    folders: list[str]  # run folder name per plan (the `run` column of the frames)
    runs: Runs | None
    cache_dir: str | Path | None = None
    progress: bool = True

    def note(self, extra: str = "", depth: str | None = None) -> str:
        """The scale stamp: model size, steps, data (plus anything a recipe adds; `depth` when runs differ in it)."""
        c = self.base
        text = (f"{self.recipe.name} at scale {self.scale}: {depth or c.depth}x{c.width}, {c.heads} heads, V={c.vocab_size}, "
                f"T={c.seq_len}, batch {c.batch_size}, {c.steps} steps, lr {c.lr:g}, {c.schedule} decay, data {c.source}"
                + (f", ≤{c.max_bytes / 1e6:g} MB" if c.max_bytes else ""))
        return text + (f"; {extra}" if extra else "")

    def table(self) -> pd.DataFrame:
        """One row per plan: slug, run, label, plan params, block, status, final eval/train loss, params, time."""
        s = self.runs.summaries.set_index("run") if self.runs is not None and not self.runs.summaries.empty else None
        rows = []
        for p, run in zip(self.plans, self.folders):
            row = {"slug": p.slug, "run": run, "label": p.label, "block": p.spec.name, **p.params}
            summ = s.loc[run].to_dict() if s is not None and run in s.index else {}
            for k in ("status", "final_eval_loss", "final_train_loss", "params", "train_time_s", "wall_time_s", "step", "steps"):
                row[k] = summ.get(k)
            if row["status"] == "diverged":
                row["final_eval_loss"] = float("nan")  # a diverged run has no comparable final loss
            rows.append(row)
        return pd.DataFrame(rows)

    def line(self, slug: str) -> str:
        """The run folder of a plan by slug."""
        for p, run in zip(self.plans, self.folders):
            if p.slug == slug:
                return run
        raise SigpropError(f"unknown run {slug!r} in recipe {self.recipe.name}; accepted: {', '.join(p.slug for p in self.plans)}")


@dataclass(frozen=True)
class Recipe:
    """A reproduced figure or table: what it tests, which runs it needs per scale, and how it is drawn."""

    name: str
    paper: str  # paper counterpart, e.g. "Fig. 3"
    shows: str  # one line: what the figure shows
    claims: tuple[int, ...]  # paper.md §6 claim numbers
    runs: Callable[[str], list[RunPlan]]  # scale -> runs (may be empty: analysis / benchmark recipes)
    make: Callable[[Context], dict]  # writes figures into ctx.out; returns the deciding numbers + verdicts
    runtime: dict[str, str]  # expected runtime per scale (measured on 2 shared cores for cpu)
    base: dict[str, TrainConfig] = field(default_factory=lambda: dict(BASE))
    partial: bool = False  # make() can draw from a subset of the runs (a study trained over several days)

    def plans(self, scale: str) -> list[RunPlan]:
        check_choice("scale", scale, RECIPE_SCALES)
        return self.runs(scale)


# ------------------------------------------------------------------------------------------------
# Verdicts: "reproduced" / "not reproduced" with the deciding number
# ------------------------------------------------------------------------------------------------

CLAIMS = {
    1: "removing the attention skip slows per-step training, even with shaped attention (V-SkipInit)",
    2: "smaller fixed beta_V = beta_P gives lower final loss, monotonically",
    3: "identity W_init beats orthogonal W_init at every beta",
    4: "with beta_V = beta_P = 0 and identity init, skipless attention matches Pre-LN per step",
    5: "trainable V/P gain ratios beta/alpha decay towards 0 in skipless blocks; no gain over fixed identity",
    6: "with the attention skip (Pre-LN) it reverses: trainable V/P ratios grow, and identity V/P slightly hurt",
    7: "shaped attention beats alpha I + beta A (value-skipinit) slightly and consistently",
    8: "SAS matches Pre-LN per step and is faster in wall-clock time",
    9: "removing the MLP skip in a sequential block hurts badly; leaky ReLU is worse than ReLU",
    10: "SAS-P matches Pre-LN per step and is the fastest normed block in runtime",
    11: "SAS-P without norms still trains, slightly worse per step",
    12: "V/P removal cuts parameters (~13-16%); SAS-P gives the largest speed-up",
    13: "SAS and SAS-P improve with depth and stay close to Pre-LN; V-SkipInit falls further behind",
    14: "with 3x more tokens the SAS / SAS-P results persist",
    15: "the best peak LR of SAS and SAS-P is Pre-LN's (1e-3 on CodeParrot): one LR serves all three",
    16: "shaped-attention alpha, beta, gamma and beta_FF do not collapse to 0 during training",
    17: "linear decay beats cosine decay at the end of training, for all blocks",
    19: "(sigprop) naive skipless attention collapses tokens (cos_mean -> 1) at init; SAS keeps the embedding geometry",
    20: "(sigprop) in Pre-LN and SAS-P the tokens do not end training collapsed (cos_mean < 0.9 in every layer)",
    21: "(paper §1.2) skipless blocks need a downweighted MLP branch, beta_FF < 1 at init",
    22: "(paper Fig. 24) a trainable first-layer W^V is very slightly better than W^V_1 = I in SAS and SAS-P",
}


def verdict(claim: int, ok: bool | str, evidence: str) -> dict:
    """One claim's outcome at this scale, with the number that decides it. `ok` is a bool (one run per side:
    reproduced / not reproduced) or a verdict string from `recipes.stats.verdict_for` (seeded comparisons)."""
    text = ok if isinstance(ok, str) else ("reproduced" if ok else "not reproduced")
    return {"claim": claim, "text": CLAIMS.get(claim, ""), "verdict": text, "evidence": evidence}


def undecided_at(scale: str, claims: list[dict]) -> list[dict]:
    """At the ci scale nothing is decided: each verdict becomes 'not decidable at ci scale', keeping what the
    numbers would have said as `outcome` (ci runs are seconds long and test the pipeline, not the paper)."""
    if scale != "ci":
        return claims
    return [{**c, "verdict": "not decidable at ci scale", "outcome": c["verdict"]} for c in claims]


#: seeds of the comparisons that decide a claim: one at ci (the pipeline only), three at cpu and paper
SEEDS = {"ci": (0,), "cpu": (0, 1, 2), "paper": (0, 1, 2)}


def seeds_for(scale: str) -> tuple[int, ...]:
    return SEEDS[scale]


def seed_losses(ctx: Context, slug_format: str, seeds: tuple[int, ...]) -> dict[int, float]:
    """seed -> final eval loss of the runs named slug_format.format(seed) (NaN when a run is missing or diverged)."""
    t = ctx.table()
    return {s: final_loss(t, slug_format.format(s)) for s in seeds}


def final_loss(table: pd.DataFrame, slug: str) -> float:
    row = table[table.slug == slug]
    return float(row.final_eval_loss.iloc[0]) if len(row) and row.final_eval_loss.iloc[0] is not None else float("nan")


@dataclass(frozen=True)
class Side:
    """One of two variants that `pairwise` compares per block."""

    suffix: str  # its run slug is block + suffix
    key: str  # its name in result.json
    label: str  # legend text after the block's label
    word: str  # its name in the evidence text
    ls: str = "-"


def pairwise(ctx: Context, blocks: tuple[str, ...], better: Side, worse: Side, name: str, note: str, claim: int) -> dict:
    """Two variants per block, eval loss per step with a zoom on the end; the claim holds when `better` ends
    lower than `worse` for every block (figs. 12 and 13)."""
    from sigprop.plots.paper import Line, plot_loss
    from sigprop.plots.style import block_style

    sides = (better, worse)
    lines = [Line.of(ctx.line(b + sd.suffix), b, f"{block_style(b)['label']}, {sd.label}", ls=sd.ls) for sd in sides for b in blocks]
    plot_loss(ctx.runs.metrics, lines, ctx.out / name, ctx.note(note), panels=(("step", "eval_loss"),), zoom=0.3)
    t = ctx.table()
    loss = {b: {sd.key: final_loss(t, b + sd.suffix) for sd in sides} for b in blocks}
    ok = all(d[better.key] < d[worse.key] for d in loss.values())
    ev = ", ".join(f"{b}: {better.word} {d[better.key]:.4f} vs {worse.word} {d[worse.key]:.4f}" for b, d in loss.items())
    return {"numbers": {"final_eval_loss": loss}, "claims": [verdict(claim, ok, ev)]}


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """What `reproduce` returns: where it wrote, which runs it trained / reused, and result.json's content."""

    recipe: str
    scale: str
    out: Path
    files: list[Path]
    trained: list[str]
    reused: list[str]
    result: dict


def _data_for(cfg: TrainConfig, cache: dict, cache_dir, progress: bool):
    key = (cfg.source, cfg.vocab_size, cfg.seq_len, cfg.max_bytes)
    if key not in cache:
        from sigprop.data import load_data

        cache[key] = load_data(cfg.source, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, cache_dir=cache_dir,
                               progress=progress, max_bytes=cfg.max_bytes)
    return cache[key]


def finished(path: Path, cfg: TrainConfig) -> bool:
    """A run folder whose summary says it is done (or diverged) at the planned number of steps."""
    run = RunDir(path)
    summary = run.summary() if run.has(CONFIG) else None
    return summary is not None and summary.get("status") in FINISHED and summary.get("steps") == cfg.steps


def select(plans: list[RunPlan], only: str | list[str] | None) -> set[str]:
    """The slugs to train: all, or those matching one of the globs in `only` (a glob matching none is an error)."""
    if not only:
        return {p.slug for p in plans}
    globs = [g.strip() for g in (only.split(",") if isinstance(only, str) else only) if g.strip()]
    for g in globs:
        if not any(fnmatch.fnmatchcase(p.slug, g) for p in plans):
            raise SigpropError(f"--only {g!r} matches no run of this recipe; accepted: globs over "
                               f"{', '.join(p.slug for p in plans[:6])}{', ...' if len(plans) > 6 else ''}")
    return {p.slug for p in plans if any(fnmatch.fnmatchcase(p.slug, g) for g in globs)}


def ensure_run(p: RunPlan, cfg: TrainConfig, path: Path, data_cache: dict, cache_dir, quiet: bool, threads: int) -> bool:
    """Finished -> reuse (False); started -> resume; absent -> train. Returns True if it trained.

    A diverged run counts as finished (it would diverge again); its summary says so and the plot shows it."""
    from sigprop.training import TrainingDiverged, train

    run = RunDir(path)
    if finished(path, cfg):
        return False
    data = _data_for(cfg, data_cache, cache_dir, not quiet)
    try:
        train(p.spec, cfg, path, resume=run.has(CONFIG), quiet=quiet, data=data, **({"threads": threads} if threads else {}))
    except TrainingDiverged:
        pass  # summary.json records status "diverged"; the recipe reports it
    return True


def reproduce(
    name: str,
    scale: str = "cpu",
    out: str | Path | None = None,
    *,
    runs_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
    threads: int = 0,
    replot: bool = False,
    only: str | list[str] | None = None,
    thin: int = 0,
) -> Result:
    """Run (or reuse) every training run of recipe `name` at `scale`, then draw its figures and write
    `<out>/result.json` with the numbers that decide its claims. `out` defaults to figures/<name>,
    `runs_dir` to <out>/runs. An interrupted run is resumed by calling this again. With the default runs_dir, a run
    that another figure beside `out` has finished (same run id: same block and config) is copied, not retrained.

    replot: train nothing; redraw the figures and verdicts from the run records already in `runs_dir`
    (finished runs only; the others are listed as missing). only: train just the plans whose slug matches
    one of these globs (comma-separated), e.g. "4x128-*-s0" to split a study across processes or days;
    the figures are drawn from whatever finished runs exist. thin: keep a trained run's train-loss rows
    every `thin` steps (all evals kept; `recipes.records`), for records committed beside a figure."""
    from sigprop.recipes import get_recipe

    recipe = get_recipe(name)
    check_choice("scale", scale, RECIPE_SCALES)
    out = Path(out) if out is not None else Path("figures") / recipe.name
    runs_dir = Path(runs_dir) if runs_dir is not None else out / "runs"
    # a gallery figure's runs/ borrows finished runs with the same id from its sibling figures' runs/
    share = [d for d in sorted(out.parent.glob("*/runs")) if d.resolve() != runs_dir.resolve()] if runs_dir == out / "runs" else []
    base = recipe.base[scale]
    plans = recipe.plans(scale)
    if len({p.slug for p in plans}) != len(plans):
        raise SigpropError(f"recipe {recipe.name} repeats a run slug; accepted: unique slugs")
    cfgs = [p.config(base) for p in plans]
    folders = [f"{p.slug}-{run_id(p.spec, c)}" for p, c in zip(plans, cfgs)]
    t0 = time.perf_counter()
    trained, reused, data_cache = [], [], {}
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    chosen = select(plans, only)
    if replot and not any(finished(runs_dir / f, c) for f, c in zip(folders, cfgs)) and plans:
        raise SigpropError(f"--replot: no finished run of recipe {recipe.name} at scale {scale} in {str(runs_dir)!r}; "
                           f"accepted: a runs folder holding its records (train them first without --replot)")
    for i, (p, cfg, folder) in enumerate(zip(plans, cfgs, folders), start=1):
        path = runs_dir / folder
        if replot or p.slug not in chosen:
            continue
        console.print(f"[bold]{recipe.name}[/] run {i}/{len(plans)}: {p.label} -> {path}", highlight=False)
        if not path.exists() and (src := find_shared(folder, share)) is not None:
            copy_records(src, path)
            console.print(f"  the same run is finished in {src}: its records copied, not retrained", style="dim")
        did = ensure_run(p, cfg, path, data_cache, cache_dir, quiet, threads)
        if did and thin and finished(path, cfg):
            thin_metrics(path, thin)
        (trained if did else reused).append(folder)
        if not did:
            console.print("  finished already: reusing it", style="dim")
        status = (RunDir(path).summary() or {}).get("status")
        if status == "interrupted":
            raise SigpropError(f"run {str(path)!r} was interrupted; run `sigprop reproduce {recipe.name} --scale {scale}` again to resume it")
    done = [f for f, c in zip(folders, cfgs) if finished(runs_dir / f, c)]
    reused += [f for f in done if f not in trained and f not in reused]
    missing = [f for f in folders if f not in done]
    if missing and not recipe.partial and only and not replot:
        # the runs asked for are trained and recorded; the figure waits for the rest (no result.json is touched)
        console.print(f"{recipe.name}: figure not drawn yet, {len(missing)} of {len(folders)} runs not finished "
                      f"(e.g. {missing[0]}); run without --only to train them", highlight=False)
        return Result(recipe.name, scale, out, [], trained, reused, {"recipe": recipe.name, "scale": scale,
                      "trained": trained, "reused": reused, "missing": missing, "claims": []})
    if missing and not recipe.partial:
        raise SigpropError(f"recipe {recipe.name} needs all {len(folders)} runs and {len(missing)} are not finished "
                           f"in {str(runs_dir)!r} (e.g. {missing[0]}); accepted: run it without --replot/--only to train them")
    runs = load_runs(*[str(runs_dir / f) for f in done]) if done else None
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(recipe, scale, out, base, plans, folders, runs, cache_dir, not quiet)
    made = recipe.make(ctx)
    made["claims"] = undecided_at(scale, made.get("claims", []))
    files = sorted(p for p in out.iterdir() if p.suffix in (".png", ".pdf"))
    if not files:
        raise SigpropError(f"recipe {recipe.name} wrote no figure into {str(out)!r}")
    train_time = float(ctx.table().wall_time_s.fillna(0).sum()) if plans else 0.0
    result = {
        "recipe": recipe.name, "paper": recipe.paper, "shows": recipe.shows, "scale": scale,
        "command": f"sigprop reproduce {recipe.name} --scale {scale} --out {out}" + (f" --runs {runs_dir}" if runs_dir != out / "runs" else ""),
        "note": ctx.note() if plans else made.get("note", ""),
        "runtime_s": round(time.perf_counter() - t0, 1),
        "train_time_s": round(train_time, 1),
        "runs": ctx.table().drop(columns=["label"], errors="ignore").to_dict(orient="records") if plans else [],
        "trained": trained, "reused": reused, "missing": missing,
        **made,
        "figures": [f.name for f in files],
    }
    atomic_write_json(out / "result.json", result)
    return Result(recipe.name, scale, out, files + [out / "result.json"], trained, reused, result)
