"""`sigprop sweep`: analyze over widths, depths, seeds and knob values; bands, theory convergence, tidy CSV."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sigprop.studies.analysis import DATA_SOURCES, DTYPES
from sigprop.cli.analyze import check_output_dir
from sigprop.cli.app import app, console, split_list
from sigprop.cli.reproduce import _L, jobs_table
from sigprop.errors import SigpropError


def int_list(what: str, text: str) -> list[int]:
    """'64,256,1024' -> [64, 256, 1024], with a one-line error naming the bad item."""
    try:
        return [int(t) for t in split_list(text)]
    except ValueError:
        raise SigpropError(f"bad --{what} {text!r}; expected comma-separated integers, e.g. 64,256,1024") from None


@app.command("sweep")
def sweep_cmd(
    block: str = typer.Option("pre-ln,sas", "--block", "-b", help="Comma-separated presets, or 'all'."),
    width: str = typer.Option("64,256,1024", "--width", help="Widths d, comma-separated."),
    depth: str = typer.Option("12", "--depth", help="Depths L, comma-separated."),
    seeds: int = typer.Option(4, "--seeds", help="Seeds 0..n-1 per point (weights and probe batch)."),
    sets: list[str] = typer.Option([], "--set", help="Knob values to sweep, e.g. --set beta_ff=0.05,0.1,0.2 (repeatable)."),
    heads: int = typer.Option(4, help="Attention heads H (must divide every width)."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence T."),
    batch: int = typer.Option(4, help="Sequences in each probe batch."),
    data: str = typer.Option("code", help=f"Input: {', '.join(DATA_SOURCES)}."),
    vocab_size: int = typer.Option(8192, "--vocab-size", help="BPE vocabulary (code) or token range (random, repeat)."),
    kind: str = typer.Option("decoder", help="decoder (causal GPT) or encoder (BERT)."),
    dtype: str = typer.Option("float32", help=f"One of {', '.join(DTYPES)}."),
    theory: bool = typer.Option(True, "--theory/--no-theory", help="Add the infinite-width prediction per point."),
    init: str = typer.Option("fixed", "--init", help="init_std per width: fixed (0.02, the paper's) or fan-in (0.02·sqrt(768/d))."),
    coord: bool = typer.Option(False, "--coord", help="Coordinate check: activation RMS per layer vs width over training steps."),
    steps: int = typer.Option(5, "--steps", help="--coord: optimiser steps (the RMS is recorded at steps 0..k)."),
    lr: float = typer.Option(1e-3, "--lr", help="--coord: AdamW learning rate, constant (paper's peak: 1e-3)."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0 = one per free core)."),
    out: Path = typer.Option(Path("sweep"), "--out", help="Folder: per-point cache, sweep.csv, bands.csv, figures."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Compute nothing: list the points that would run (with a cluster --launcher: the jobs it would submit)."),
    launcher: str = _L["launcher"], partition: str = _L["partition"], time: int = _L["time"], cpus: int = _L["cpus"],
    gpus: int = _L["gpus"], mem: float = _L["mem"],
) -> None:
    """Any analyze metric over a grid; mean +- std over seeds per layer, theory convergence with width."""
    from sigprop.training.cluster import Launcher
    from sigprop.studies.sweeps import sweep

    where = Launcher(launcher, partition=partition, time=time, cpus=cpus, gpus=gpus, mem=mem)
    check_output_dir(out, "sweep.json")
    if coord and steps < 1:
        raise SigpropError(f"--steps must be >= 1 for --coord, got {steps}")
    s = sweep(split_list(block), widths=int_list("width", width), depths=int_list("depth", depth), seeds=seeds,
              grid=sets, heads=heads, seq_len=seq_len, batch=batch, data=data, vocab_size=vocab_size, kind=kind,
              dtype=dtype, theory=theory and not coord, init=init, coord_steps=steps if coord else 0, lr=lr, out=out,
              workers=workers or None, launcher=where, dry_run=dry_run)
    if dry_run:
        if where.submits:
            console.print(jobs_table(s, where, out / "submitit"))
        else:
            console.print(f"{len(s)} point(s) to compute into {out}: " + "; ".join(label for label, _ in s[:5]) + (" ..." if len(s) > 5 else ""))
        return
    if coord:
        _print_growth(s)
        paths = s.save(out)
        console.print(f"wrote {len(paths)} files to [bold]{out}[/]: " + ", ".join(p.name for p in paths))
        return
    _print_last_layer(s)
    if s.has_theory:
        _print_slopes(s)
    paths = s.save(out)
    console.print(f"wrote {len(paths)} files to [bold]{out}[/]: " + ", ".join(p.name for p in paths))


def _print_last_layer(s) -> None:
    b = s.bands()
    last = b[(b.layer == b.layer.max()) & (b.metric == "cos_mean")]
    wide = last.pivot_table(index=s.groups, columns="source", values=["mean", "std"]).reset_index()
    table = Table(title="final-layer cos_mean (mean ± std over seeds)", title_justify="left", show_edge=False)
    for g in s.groups:
        table.add_column(g)
    table.add_column("measured", justify="right")
    if ("mean", "theory") in wide:
        table.add_column("theory", justify="right")
    for _, r in wide.iterrows():
        row = [str(r[(g, "")]) for g in s.groups] + [f"{r[('mean', 'measured')]:.3f} ± {r[('std', 'measured')]:.3f}"]
        if ("mean", "theory") in wide:
            row.append(f"{r[('mean', 'theory')]:.3f}")
        table.add_row(*row)
    console.print(table)


def _print_slopes(s) -> None:
    sl = s.slopes()
    table = Table(title="|measured - theory| cos_mean against width (log-log fit)", title_justify="left", show_edge=False)
    for c in sl.columns:
        table.add_column(c, justify="left" if sl[c].dtype == object else "right")
    for _, r in sl.iterrows():
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r))
    console.print(table)


def _print_growth(c) -> None:
    g = c.growth()
    g = g[g.step.isin([0, g.step.max()])]
    table = Table(title="coordinate check: log2 RMS change per width doubling (0 = width-stable)", title_justify="left",
                  show_edge=False)
    for col in g.columns:
        table.add_column(col, justify="right" if g[col].dtype != object else "left")
    for _, r in g.iterrows():
        table.add_row(*(f"{v:+.3f}" if isinstance(v, float) else str(v) for v in r))
    console.print(table)
