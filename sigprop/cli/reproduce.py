"""`sigprop reproduce NAME --scale ci|cpu|paper --out DIR`, `sigprop reproduce --list` and `--budget`."""

from __future__ import annotations

from pathlib import Path
from time import perf_counter

import typer
from rich.markup import escape
from rich.table import Table

from sigprop.cli.app import app, console
from sigprop.errors import SigpropError


def recipe_table() -> Table:
    """Every recipe in three columns that wrap (readable at 80 columns): the recipe and the claims it tests, the
    expected runtime at each scale it plans, and its paper counterpart with what it shows."""
    from sigprop.recipes import RECIPES

    t = Table(title="sigprop reproduce: recipes (cpu runtimes measured on 2 shared cores)", show_lines=True)
    t.add_column("recipe", min_width=13, max_width=14)
    t.add_column("runtime per scale", min_width=20, ratio=2)
    t.add_column("paper, what it shows", min_width=24, ratio=3)
    for r in RECIPES.values():
        claims = f"\n[dim]claims {', '.join(map(str, r.claims))}[/]" if r.claims else ""
        runtime = "\n".join(f"[bold]{s}[/] {escape(r.runtime.get(s, '?'))}" for s in r.scales)
        t.add_row(f"[bold]{r.name}[/]{claims}", runtime, f"[italic]{escape(r.paper)}[/]\n{escape(r.shows)}")
    return t


def status_table(name: str, scale: str | None, out: Path | None, runs: Path | None, only: str | None) -> Table:
    """--dry-run: each run of a recipe and what reproduce would do with it, with the counts in the title."""
    from sigprop.recipes import plan_status
    from sigprop.recipes.executor import default_scale

    scale = scale or default_scale(name)
    st = plan_status(name, scale, out, runs_dir=runs, only=only)
    todo = st[st.selected & ~st.action.eq("finished")]
    kinds = todo.action.str.split().str[0].value_counts()
    counts = ", ".join(f"{kinds.get(k, 0)} to {k}" for k in ("train", "resume", "copy")) + \
        (f", {kinds['training']} training now" if "training" in kinds else "")
    hours = float(st.wall_time_s.fillna(0).sum()) / 3600
    t = Table(title=f"{name} at scale {scale}: {int(st.action.eq('finished').sum())} of {len(st)} runs finished "
                    f"({hours:.1f} h of training); {counts}"
                    + (f" (--only selects {int(st.selected.sum())})" if only else ""), show_lines=False)
    tiers = scale == "cpu"
    for col in ("slug", "steps", *(("tier",) if tiers else ()), "action", "run"):
        t.add_column(col, no_wrap=col != "action")
    for r in st.itertuples():
        style = None if r.selected else "dim"
        t.add_row(r.slug, str(r.steps), *((str(r.tier),) if tiers else ()), r.action, r.run, style=style)
    return t


def budget_table(scale: str, root: Path) -> Table:
    """--budget: the gallery's distinct runs per recipe and tier, finished (measured) and still to train (estimated)."""
    from sigprop.recipes.budget import BUDGET_HOURS, gallery_budget

    t = gallery_budget(scale, root)
    cap = BUDGET_HOURS.get(scale)
    inside = float(t[t.tier <= 2].plan_hours.sum())
    title = (f"gallery at scale {scale}: {len(t)} distinct runs, {t.plan_hours.sum():.1f} one-thread hours planned (model "
             f"FLOPs at the finished runs' median rate); tiers 1-2 (the committed gallery) {inside:.1f} h"
             + (f" of a {cap:g} h budget" if cap else "")
             + f"; the finished runs took {t[t.status == 'finished'].hours.sum():.1f} h (measured)")
    tab = Table(title=title, show_lines=False)
    for col in ("recipe", "tier", "runs", "finished", "planned h", "finished h (measured)", "to train h", "pending h"):
        tab.add_column(col, justify="left" if col == "recipe" else "right")
    order = {name: i for i, name in enumerate(dict.fromkeys(t.recipe))}
    for (name, tier), g in sorted(t.groupby(["recipe", "tier"]), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        h = g.groupby("status").hours.sum()
        tab.add_row(name, str(tier), str(len(g)), str(int((g.status == "finished").sum())), f"{g.plan_hours.sum():.1f}",
                    *(f"{h.get(k, 0.0):.1f}" for k in ("finished", "to train", "pending")), style="dim" if tier > 2 else None)
    return tab


def launcher_options():
    """The cluster options `reproduce` and `sweep` share (sigprop.training.cluster), as typer parameters."""
    from sigprop.training.cluster import LAUNCHERS

    return dict(
        launcher=typer.Option("local", "--launcher", help=f"Where runs train: {', '.join(LAUNCHERS)} (one job per run through submitit; needs sigprop[cluster])."),
        partition=typer.Option(None, "--partition", help="--launcher slurm: the partition."),
        time=typer.Option(60, "--time", help="Per job: time limit in minutes."),
        cpus=typer.Option(1, "--cpus", help="Per job: CPUs (reproduce: also the torch threads of its run unless --threads)."),
        gpus=typer.Option(0, "--gpus", help="Per job: GPUs."),
        mem=typer.Option(None, "--mem", help="Per job: memory in GB (default: the cluster's)."),
    )


_L = launcher_options()


def jobs_table(jobs: list[tuple[str, str]], launcher, folder: Path) -> Table:
    """--dry-run with a cluster launcher: the jobs it would submit."""
    t = Table(title=f"would submit {len(jobs)} job(s) to {launcher.describe()}, logs in {folder}", show_lines=False)
    t.add_column("job", justify="right")
    t.add_column("name", no_wrap=True)
    t.add_column("writes", no_wrap=True)
    for i, (name, where) in enumerate(jobs):
        t.add_row(str(i), name, where)
    return t


@app.command("reproduce")
def reproduce_cmd(
    name: str = typer.Argument(None, help="Recipe name (see --list), or 'all'."),
    scale: str = typer.Option(None, "--scale", "-s", help="ci (seconds) | cpu (the long CPU scale) | gpu (one ten-minute GPU call; recipe gpu) | paper (GPU days); default the recipe's own: cpu, gpu for recipe gpu."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for figures and result.json (default figures/<recipe>; --budget: the gallery folder)."),
    runs: Path = typer.Option(None, "--runs", help="Folder of training runs, shared between recipes (default <out>/runs; --replot: the records committed in figures/<recipe>/runs unless <out>/runs exists)."),
    list_: bool = typer.Option(False, "--list", "-l", help="List the recipes with their paper counterpart and runtime."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads per run (0 = torch's default)."),
    replot: bool = typer.Option(False, "--replot", help="Train nothing: redraw the figures and verdicts from the run records in the runs folder (default: the committed records)."),
    thin: int = typer.Option(0, "--thin-records", help="Keep a trained run's train-loss rows every N steps (every eval kept): small records to commit beside a figure."),
    only: str = typer.Option(None, "--only", help="Train only the runs whose slug matches one of these globs (comma-separated), e.g. '4x128-*-s0'; two processes can take disjoint sets."),
    budget: bool = typer.Option(False, "--budget", help="Train nothing: every distinct run of the gallery at --scale with its tier and one-thread hours (planned from model FLOPs; finished: also measured), the plan against the 24-hour cpu budget."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Train nothing: list each run and what reproduce would do with it (finished, copy, resume, train)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    launcher: str = _L["launcher"], partition: str = _L["partition"], time: int = _L["time"], cpus: int = _L["cpus"],
    gpus: int = _L["gpus"], mem: float = _L["mem"],
) -> None:
    """Regenerate a figure/table of the paper from real training runs (finished runs are reused, unfinished resumed)."""
    from sigprop.training.cluster import Launcher
    from sigprop.recipes import RECIPES, reproduce
    from sigprop.recipes.records import gallery, shown

    where = Launcher(launcher, partition=partition, time=time, cpus=cpus, gpus=gpus, mem=mem)
    if list_:
        console.print(recipe_table())
        return
    if budget:
        console.print(budget_table(scale or "cpu", out or gallery()))
        return
    if not name:
        raise SigpropError("no recipe given; accepted: --list, all, " + ", ".join(RECIPES))
    if name.strip().lower() == "all":
        scale = scale or "cpu"
        names = [n for n, r in RECIPES.items() if scale in r.scales]
    else:
        names = [name]
    for n in names:
        target = out if (out is None or len(names) == 1) else out / n
        if dry_run:
            console.print(status_table(n, scale, target, runs, only))
            if where.submits:
                from sigprop.recipes.executor import default_scale, layout, queued_runs

                lay = layout(n, scale or default_scale(n), target, runs)
                console.print(jobs_table([(p.slug, str(lay.runs_dir / f)) for p, _, f in queued_runs(lay, only)], where, lay.out / "submitit"))
            continue
        t0 = perf_counter()
        res = reproduce(n, scale=scale, out=target, runs_dir=runs, quiet=quiet, threads=threads, replot=replot, only=only, thin=thin,
                        launcher=where)
        if quiet or not res.files:  # nothing drawn: --only trained part of a figure's runs (reproduce said so)
            continue
        r = res.result
        console.print(f"[bold]{r['recipe']}[/] ({r['paper']}) at scale {res.scale}: wrote {len(res.files)} files to {shown(res.out)} "
                      f"in {perf_counter() - t0:.0f} s (trained {len(res.trained)}, reused {len(res.reused)} runs)", highlight=False)
        for c in r.get("claims", []):
            colour = {"reproduced": "green", "not reproduced": "yellow", "reversed": "red"}.get(c["verdict"], "dim")
            console.print(f"  claim {c['claim']}: [{colour}]{c['verdict']}[/] — {c['evidence']}", highlight=False)
