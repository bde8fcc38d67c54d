"""The one executor every recipe shares: `reproduce` trains (or reuses, resumes, copies) a recipe's runs and draws
its figures and verdicts; `plan_status` says what it would do, run by run (`--dry-run`).

    result = reproduce("fig3", scale="cpu", out="figures/fig3", runs_dir="runs/recipes")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sigprop.data import load_data
from sigprop.errors import SigpropError
from sigprop.recipes.base import Context, Recipe, RunPlan, run_id, select, undecided_at
from sigprop.recipes.records import FINISHED, compact, copy_records, find_shared, gallery, shown
from sigprop.runs import CONFIG, RunDir, atomic_write_json, held_by, load_runs, read_json
from sigprop.training import TrainConfig, TrainingDiverged, train
from sigprop.training.cluster import Launcher, run_jobs


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
        cache[key] = load_data(cfg.source, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, cache_dir=cache_dir,
                               progress=progress, max_bytes=cfg.max_bytes)
    return cache[key]


def finished(path: Path, cfg: TrainConfig) -> bool:
    """A run folder whose summary says it is done (or diverged) at the planned number of steps."""
    run = RunDir(path)
    summary = run.summary() if run.has(CONFIG) else None
    return summary is not None and summary.get("status") in FINISHED and summary.get("steps") == cfg.steps


def ensure_run(p: RunPlan, cfg: TrainConfig, path: Path, data_cache: dict, cache_dir, quiet: bool, threads: int) -> bool:
    """Finished -> reuse (False); started -> resume; absent -> train. Returns True if it trained.

    A diverged run counts as finished (it would diverge again); its summary says so and the plot shows it."""
    run = RunDir(path)
    if finished(path, cfg):
        return False
    data = _data_for(cfg, data_cache, cache_dir, not quiet)
    try:
        train(p.spec, cfg, path, resume=run.has(CONFIG), quiet=quiet, data=data, **({"threads": threads} if threads else {}))
    except TrainingDiverged:
        pass  # summary.json records status "diverged"; the recipe reports it
    return True


def train_job(p: RunPlan, cfg: TrainConfig, path: Path, cache_dir, threads: int) -> str:
    """One run as a cluster job (`sigprop.training.cluster`): train (or resume) it under its run lock; returns its status."""
    ensure_run(p, cfg, Path(path), {}, cache_dir, True, threads)
    return (RunDir(path).summary() or {}).get("status", "unknown")


def queued_runs(lay: Layout, only) -> list[tuple[RunPlan, TrainConfig, str]]:
    """The selected runs a launcher would submit: not finished, not copyable from a sibling figure, not being trained
    now by another process (its lock holder finishes it)."""
    chosen = select(lay.plans, only)
    out = []
    for p, cfg, folder in zip(lay.plans, lay.cfgs, lay.folders):
        path = lay.runs_dir / folder
        if p.slug not in chosen or finished(path, cfg) or held_by(path):
            continue
        if not path.exists() and find_shared(folder, lay.share) is not None:
            continue
        out.append((p, cfg, folder))
    return out


@dataclass(frozen=True)
class Layout:
    """Where a recipe's runs live at one scale: the recipe, its output and runs folders, the sibling runs/ folders it
    may copy finished runs from, its base config, and per plan its config and run folder (`<slug>-<run id>`)."""

    recipe: Recipe
    out: Path
    runs_dir: Path
    share: list[Path]
    base: TrainConfig
    plans: list[RunPlan]
    cfgs: list[TrainConfig]
    folders: list[str]


def default_scale(name: str) -> str:
    """A recipe's own scale when none is named: cpu where it plans one, else its first beyond ci (gpu for `gpu`)."""
    from sigprop.recipes import get_recipe

    scales = get_recipe(name).scales
    return "cpu" if "cpu" in scales else next((s for s in scales if s != "ci"), scales[0])


def replot_folders(name: str, out=None, runs_dir=None) -> tuple[Path, Path]:
    """Where a replot reads and writes: --runs, else <out>/runs when --out holds runs, else the committed records
    (figures/NAME/runs of the checkout, wherever the command runs from); it writes to --out, else figures/NAME."""
    from sigprop.recipes import get_recipe

    name = get_recipe(name).name
    try:
        committed = gallery() / name
    except SigpropError:  # not a checkout: the folders beside the command, as a training run would use
        committed = Path("figures") / name
    if runs_dir is None:
        runs_dir = Path(out) / "runs" if out is not None and (Path(out) / "runs").is_dir() else committed / "runs"
    return (Path(out) if out is not None else committed), Path(runs_dir)


def layout(name: str, scale: str, out=None, runs_dir=None) -> Layout:
    """The Layout of recipe `name` at `scale`; `out` defaults to figures/<name>, `runs_dir` to <out>/runs."""
    from sigprop.recipes import get_recipe

    recipe = get_recipe(name)
    recipe.check_scale(scale)
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
    return Layout(recipe, out, runs_dir, share, base, plans, cfgs, folders)


def plan_status(name: str, scale: str | None = None, out: str | Path | None = None, *, runs_dir: str | Path | None = None,
                only: str | list[str] | None = None) -> pd.DataFrame:
    """What `reproduce` would do, run by run, without doing it (`sigprop reproduce NAME --dry-run`): one row per
    plan with its slug, run folder, steps, whether --only selects it, its action: finished (reused), copy
    (finished in a sibling figure's runs/), resume (started, at its last recorded step) or train, and the wall
    time a finished run took (seconds, from its summary), and at the cpu scale its tier in the gallery's budget
    (`Recipe.tier`: 1-2 inside the 24 hours, 3 beyond)."""
    lay = layout(name, scale or default_scale(name), out, runs_dir)
    recipe, out, runs_dir = lay.recipe, lay.out, lay.runs_dir
    chosen, rows = select(lay.plans, only), []
    for p, cfg, folder in zip(lay.plans, lay.cfgs, lay.folders):
        path = runs_dir / folder
        wall = None
        if finished(path, cfg):
            action, wall = "finished", (RunDir(path).summary() or {}).get("wall_time_s")
        elif not path.exists() and (src := find_shared(folder, lay.share)) is not None:
            action = f"copy from {src.parent.parent.name}"
        elif (path / CONFIG).exists():
            rows_ = RunDir(path).metrics()
            at = int(rows_.step.max()) if not rows_.empty else 0
            holder = held_by(path)
            action = f"training now ({holder.split(' (')[0]}), at step {at}" if holder else f"resume at step {at}"
        else:
            action = "train"
        rows.append({"slug": p.slug, "run": folder, "steps": cfg.steps, "selected": p.slug in chosen, "action": action,
                     "wall_time_s": wall, "tier": recipe.tier_of(p) if scale == "cpu" else None})
    return pd.DataFrame(rows, columns=["slug", "run", "steps", "selected", "action", "wall_time_s", "tier"])


def made_by(path: Path, new: dict) -> dict:
    """What an earlier result.json at `path` says about how its runs were made (runtime_s, trained, reused), when
    it is the same recipe and scale drawn from the same runs: a replot redraws, it does not make them again."""
    try:
        old = read_json(path) if path.exists() else {}
    except SigpropError:  # unreadable: the replot replaces it
        old = {}
    keys = ("runtime_s", "trained", "reused")
    same = (all(k in old for k in keys) and (old.get("recipe"), old.get("scale")) == (new["recipe"], new["scale"])
            and sorted(old["trained"] + old["reused"]) == sorted(new["trained"] + new["reused"]))
    return {k: old[k] for k in keys} if same else {}


def run_records(table) -> list[dict]:
    """The runs table as result.json rows; counts stay ints where a missing run turned their column to floats."""
    rows = table.drop(columns=["label"], errors="ignore").to_dict(orient="records")
    for r in rows:
        for k in ("params", "step", "steps"):
            if isinstance(r.get(k), float) and r[k].is_integer():
                r[k] = int(r[k])
    return rows


def reproduce(
    name: str,
    scale: str | None = None,
    out: str | Path | None = None,
    *,
    runs_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
    threads: int = 0,
    replot: bool = False,
    only: str | list[str] | None = None,
    thin: int = 0,
    launcher: Launcher | None = None,
) -> Result:
    """Run (or reuse) every training run of recipe `name` at `scale`, then draw its figures and write
    `<out>/result.json` with the numbers that decide its claims. `scale` defaults to the recipe's own
    (`default_scale`: cpu, or gpu for `gpu`), `out` to figures/<name>, `runs_dir` to <out>/runs. An interrupted run is resumed by calling this again. With the default runs_dir, a run
    that another figure beside `out` has finished (same run id: same block and config) is copied, not retrained.

    replot: train nothing; redraw the figures and verdicts from the run records already in `runs_dir`
    (finished runs only; the others are listed as missing); by default the records committed in the checkout's
    figures/<name>/runs (`replot_folders`). Replotting into a folder whose result.json came from the same runs
    keeps its record of how they were made (runtime_s, trained, reused), so the committed files stay byte-stable. only: train just the plans whose slug matches
    one of these globs (comma-separated), e.g. "4x128-*-s0" to split a study across processes or days;
    the figures are drawn from whatever finished runs exist. thin: compact every finished run's records for
    committing beside a figure: train-loss rows every `thin` steps (all evals kept), gzipped (`recipes.records`).
    launcher: train the runs as one job each through submitit (`sigprop.training.cluster`: slurm, local-submitit) and wait
    for them; the figures are drawn here once they are done."""
    scale = scale or default_scale(name)
    if replot:
        out, runs_dir = replot_folders(name, out, runs_dir)
    lay = layout(name, scale, out, runs_dir)
    recipe, out, runs_dir = lay.recipe, lay.out, lay.runs_dir
    t0 = time.perf_counter()
    trained, reused, data_cache = [], [], {}
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    chosen = select(lay.plans, only)
    if replot and not lay.plans:
        raise SigpropError(f"--replot: recipe {recipe.name} trains no runs, so it has no records to redraw from (it measures "
                           f"its numbers each time); accepted: sigprop reproduce {recipe.name} without --replot")
    if replot and not any(finished(runs_dir / f, c) for f, c in zip(lay.folders, lay.cfgs)):
        raise SigpropError(f"--replot: no finished run of recipe {recipe.name} at scale {scale} in {str(runs_dir)!r}; "
                           f"accepted: a runs folder holding its records (train them first without --replot)")
    jobs: list[tuple] = []
    for i, (p, cfg, folder) in enumerate(zip(lay.plans, lay.cfgs, lay.folders), start=1):
        path = runs_dir / folder
        if replot or p.slug not in chosen:
            continue
        console.print(f"[bold]{recipe.name}[/] run {i}/{len(lay.plans)}: {p.label} -> {path}", highlight=False)
        if not path.exists() and (src := find_shared(folder, lay.share)) is not None:
            copy_records(src, path)
            console.print(f"  the same run is finished in {src}: its records copied, not retrained", style="dim")
        if launcher is not None and launcher.submits and not finished(path, cfg):
            if holder := held_by(path):
                console.print(f"  being trained by {holder}: not submitted", style="dim")
            else:
                jobs.append((p, cfg, folder))
            continue
        did = ensure_run(p, cfg, path, data_cache, cache_dir, quiet, threads)
        (trained if did else reused).append(folder)
        if not did:
            console.print("  finished already: reusing it", style="dim")
        status = (RunDir(path).summary() or {}).get("status")
        if status == "interrupted":
            raise SigpropError(f"run {str(path)!r} was interrupted; run `sigprop reproduce {recipe.name} --scale {scale}` again to resume it")
    if jobs:
        statuses = run_jobs(launcher, train_job, [(p, cfg, runs_dir / f, cache_dir, threads or launcher.cpus) for p, cfg, f in jobs],
                            [f for _, _, f in jobs], out / "submitit", f"sigprop-{recipe.name}", say=lambda s: console.print(s, highlight=False))
        trained += [f for _, _, f in jobs]
        stopped = [f for (_, _, f), st in zip(jobs, statuses) if st == "interrupted"]
        if stopped:
            raise SigpropError(f"run {str(runs_dir / stopped[0])!r} was interrupted in its job; run `sigprop reproduce {recipe.name} "
                               f"--scale {scale}` again to resume it")
    done = [f for f, c in zip(lay.folders, lay.cfgs) if finished(runs_dir / f, c)]
    if thin:  # every finished run of the figure, trained now or before (--replot included): records to commit
        packed_now = sum(compact(runs_dir / f, thin) for f in done)
        if packed_now:
            console.print(f"  {packed_now} finished run(s) thinned to every {thin} steps and packed (.jsonl.gz)", style="dim")
    reused += [f for f in done if f not in trained and f not in reused]
    missing = [f for f in lay.folders if f not in done]
    if missing and not recipe.partial and only and not replot:
        # the runs asked for are trained and recorded; the figure waits for the rest (no result.json is touched)
        console.print(f"{recipe.name}: figure not drawn yet, {len(missing)} of {len(lay.folders)} runs not finished "
                      f"(e.g. {missing[0]}); run without --only to train them", highlight=False)
        return Result(recipe.name, scale, out, [], trained, reused, {"recipe": recipe.name, "scale": scale,
                      "trained": trained, "reused": reused, "missing": missing, "claims": []})
    if missing and not recipe.partial:
        raise SigpropError(f"recipe {recipe.name} needs all {len(lay.folders)} runs and {len(missing)} are not finished "
                           f"in {str(runs_dir)!r} (e.g. {missing[0]}); accepted: run it without --replot/--only to train them")
    runs = load_runs(*[str(runs_dir / f) for f in done]) if done else None
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(recipe, scale, out, lay.base, lay.plans, lay.folders, runs, cache_dir, not quiet)
    made = recipe.make(ctx)
    if made is None:  # a partial recipe whose finished runs do not make a figure yet (e.g. only its baselines)
        console.print(f"{recipe.name}: nothing to draw yet from the {len(done)} finished run(s); {len(missing)} to train",
                      highlight=False)
        return Result(recipe.name, scale, out, [], trained, reused, {"recipe": recipe.name, "scale": scale,
                      "trained": trained, "reused": reused, "missing": missing, "claims": []})
    made["claims"] = undecided_at(scale, made.get("claims", []))
    files = sorted(p for p in out.iterdir() if p.suffix in (".png", ".pdf"))
    if not files:
        raise SigpropError(f"recipe {recipe.name} wrote no figure into {str(out)!r}")
    train_time = float(ctx.table().wall_time_s.fillna(0).sum()) if lay.plans else 0.0
    result = {
        "recipe": recipe.name, "paper": recipe.paper, "shows": recipe.shows, "scale": scale,
        "command": f"sigprop reproduce {recipe.name} --scale {scale} --out {shown(out)}"
                   + (f" --runs {shown(runs_dir)}" if runs_dir != out / "runs" else ""),
        "note": ctx.note() if lay.plans else made.get("note", ""),
        "runtime_s": round(time.perf_counter() - t0, 1),
        "train_time_s": round(train_time, 1),
        "runs": run_records(ctx.table()) if lay.plans else [],
        "trained": trained, "reused": reused, "missing": missing,
        **made,
        "figures": [f.name for f in files],
    }
    if replot:
        result.update(made_by(out / "result.json", result))
    atomic_write_json(out / "result.json", result)
    return Result(recipe.name, scale, out, files + [out / "result.json"], trained, reused, result)
