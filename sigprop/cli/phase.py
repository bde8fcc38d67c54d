"""`sigprop phase`: phase diagrams of rank collapse at init from theory, with a few points measured."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from sigprop.studies.analysis import DATA_SOURCES
from sigprop.cli.app import app, console, split_list
from sigprop.errors import check_choice


@app.command("phase")
def phase_cmd(
    diagram: str = typer.Option("all", "--diagram", "-d", help="Comma-separated diagrams, or 'all' (see --list)."),
    width: int = typer.Option(768, help="Width d of the theory's scalings (init std 0.02) and the measured networks."),
    heads: int = typer.Option(12, help="Attention heads H (paper: 12)."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence T (paper: 128)."),
    batch: int = typer.Option(2, help="Sequences in the probe batch."),
    seed: int = typer.Option(0, help="Seed for the weights and the batch."),
    data: str = typer.Option("code", help=f"Input: {', '.join(DATA_SOURCES)}."),
    vocab_size: int = typer.Option(8192, "--vocab-size", help="BPE vocabulary (code) or token range (random, repeat)."),
    measured: bool = typer.Option(True, "--measure/--no-measure", help="Measure the paper's setting and a few grid points."),
    out: Path = typer.Option(Path("figures/phase"), "--out", help="Folder for the figures and the CSV tables."),
    list_only: bool = typer.Option(False, "--list", help="List the diagrams and exit."),
) -> None:
    """Final-layer cos_mean and eff_rank (or the attention-entropy ratio) over two knobs (theory), measured points marked; the paper's setting starred."""
    from sigprop.studies.phases import DIAGRAMS, check_diagrams, phase
    from sigprop.runs import atomic_write_bytes

    if list_only:
        table = Table(show_edge=False)
        for c in ("diagram", "block", "x", "y", "paper's setting"):
            table.add_column(c)
        for d in DIAGRAMS.values():
            table.add_row(d.name, d.block, d.x, d.y, f"{d.x}={d.paper[0]}, {d.y}={d.paper[1]}")
        console.print(table)
        return
    check_choice("data", data, DATA_SOURCES)
    for name in check_diagrams(split_list(diagram)):
        t0 = time.perf_counter()
        p = phase(name, width=width, heads=heads, seq_len=seq_len, batch=batch, seed=seed, data=data,
                  vocab_size=vocab_size, measure_points=measured)
        p.plot(out)
        atomic_write_bytes(out / f"{name}.csv", p.grid.to_csv(index=False).encode())
        if len(p.points):
            atomic_write_bytes(out / f"{name}-measured.csv", p.points.to_csv(index=False).encode())
        secs = time.perf_counter() - t0
        verdict = "[green]measured points agree with theory[/]" if p.agrees else "[red]some measured points disagree[/]"
        console.print(f"[bold]{name}[/]: {len(p.grid) // 2} grid points, theory {p.seconds['theory']:.1f} s, "
                      f"measured {p.seconds['measured']:.1f} s, total {secs:.1f} s; {verdict if len(p.points) else ''}")
        if len(p.points):
            _print_points(p)
    console.print(f"wrote figures and tables to [bold]{out}[/]")


def _print_points(p) -> None:
    d = p.diagram
    table = Table(show_edge=False, pad_edge=False)
    for c in (d.x, d.y, "metric", "measured", "theory", "gap", "ok"):
        table.add_column(c, justify="right")
    for _, r in p.points.iterrows():
        table.add_row(f"{r.x:g}", f"{r.y:g}", r.metric, f"{r.measured:.3f}", f"{r.theory:.3f}", f"{r.gap:.3f}",
                      "[green]yes[/]" if r.ok else "[red]no[/]")
    console.print(table)
