"""`sigprop analyze`: rank collapse (or its absence) layer by layer at init, measured and predicted."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sigprop.studies.analysis import DATA_SOURCES, DTYPES, analyze
from sigprop.cli.app import app, console, folder
from sigprop.errors import SigpropError, check_choice
from sigprop.runs import check_writable

FORMATS = ("table", "json", "csv")


def check_output_dir(out: Path, manifest: str) -> None:
    """Refuse to write into a non-empty folder that a previous run of the same command did not make."""
    if out.exists() and any(out.iterdir()) and not (out / manifest).exists():
        raise SigpropError(f"output folder {out} is not empty and holds no {manifest}; choose another --out")


@app.command("analyze")
def analyze_cmd(
    block: list[str] = typer.Option(["sas"], "--block", "-b", help="Preset(s): repeat, comma-separate, or 'all'."),
    model: str | None = typer.Option(None, "--model", "-m", help="A pretrained model instead of presets: a folder written by save_pretrained, or a hub id (needs a network)."),
    revision: list[str] = typer.Option([], "--revision", help="Checkpoint(s) of --model, comma-separated (hub revisions, or subfolders of a local folder), e.g. step1000,step10000."),
    run: Path | None = typer.Option(None, "--run", help="A training run's folder (sigprop train --out): probe its final checkpoint on the run's own data."),
    all_checkpoints: bool = typer.Option(False, "--all-checkpoints", help="With --run: every checkpoint it kept (--keep-checkpoints), and a layer x checkpoint figure."),
    depth: int = typer.Option(18, help="Number of blocks L (paper: 18)."),
    width: int = typer.Option(768, help="Width d (paper: 768)."),
    heads: int = typer.Option(12, help="Attention heads H (paper: 12)."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence T (paper: 128)."),
    batch: int = typer.Option(8, help="Sequences in the probe batch."),
    seed: int = typer.Option(0, help="Seed for the weights (the same for every block) and the batch."),
    dtype: str = typer.Option("float32", help=f"One of {', '.join(DTYPES)}."),
    data: str = typer.Option("code", help=f"Input: {', '.join(DATA_SOURCES)} (code = stdlib validation split)."),
    vocab_size: int = typer.Option(8192, "--vocab-size", help="BPE vocabulary (code) or token range (random, repeat)."),
    kind: str = typer.Option("decoder", help="decoder (causal GPT) or encoder (BERT, no mask)."),
    sets: list[str] = typer.Option([], "--set", help="Override a knob for every block, e.g. --set beta_ff=0.2."),
    theory: bool = typer.Option(True, "--theory/--no-theory", help="Add the infinite-width prediction."),
    grad: bool = typer.Option(False, "--grad", help="Also one backward pass of the model's loss: dL/dX per layer and W^Q/W^K/W^V/MLP gradient norms."),
    outliers: bool = typer.Option(False, "--outliers", help="Also the outlier-feature statistics per layer (kurtosis, max/median, batch correlation with its theory, attention sinks)."),
    attention: bool = typer.Option(False, "--attention", help="Also the softmax attention's entropy per layer, as a fraction of its maximum (1 = uniform; heads averaged and the most uniform head), and its sigma_2/sigma_1."),
    out: str | None = typer.Option(None, "--out", help="Folder for figures, metrics.csv and analysis.json."),
    fmt: str = typer.Option("table", "--format", help=f"Output on stdout: {', '.join(FORMATS)}."),
    every: int = typer.Option(1, "--every", help="Show every k-th layer in the table (the last is always shown)."),
    show_table: bool = typer.Option(True, "--table/--no-table", help="Print the per-layer tables (format=table)."),
) -> None:
    """Probe blocks at initialisation (or a pretrained --model, or a training --run) on one batch: cos_mean, eff_rank, rank-1 residual per layer."""
    check_choice("format", fmt, FORMATS)
    out = folder("--out", out)
    if every < 1:
        raise SigpropError(f"--every must be >= 1, got {every}")
    if out is not None:
        check_writable(out)  # before minutes of probing, not after
        check_output_dir(out, "analysis.json")
    a = analyze(block, model=model, revisions=revision, depth=depth, width=width, heads=heads, seq_len=seq_len, batch=batch, seed=seed, data=data,
                vocab_size=vocab_size, sets=sets, theory=theory, dtype=dtype, kind=kind, grad=grad, progress=fmt == "table",
                outliers=outliers, attention=attention, run=run, all_checkpoints=all_checkpoints)
    if fmt == "json":
        print(json.dumps({"settings": a.settings, "verdicts": a.verdicts, "metrics": a.metrics.to_dict(orient="records")}))
    elif fmt == "csv":
        print(a.metrics.to_csv(index=False), end="")
    else:
        console.print(f"[dim]{a.scale_text()}[/]")
        for name in a.blocks:
            if show_table:
                _print_table(name, a.table(name), every)
                if grad:
                    _print_table(f"{name}: gradients", a.grad_table(name), every)
                if outliers:
                    _print_table(f"{name}: outlier features", a.outlier_table(name), every)
                if attention:
                    _print_table(f"{name}: attention", a.attention_table(name), every)
            style = "red" if a.verdicts[name].startswith("rank collapse") else "green" if a.verdicts[name].startswith("no") else "yellow"
            console.print(f"[bold]{name}[/]: [{style}]{a.verdicts[name]}[/]")
            for note in a.theory[name].notes if name in a.theory else ():
                console.print(f"  [dim]theory: {note}[/]")
    if out is not None:
        paths = a.save(out)
        if fmt == "table":
            console.print(f"wrote {len(paths)} files to [bold]{out}[/]: " + ", ".join(p.name for p in paths))


def _print_table(name: str, t, every: int) -> None:
    table = Table(title=name, title_justify="left", show_edge=False, pad_edge=False)
    for col in t.columns:
        table.add_column(str(col), justify="right")
    last = len(t) - 1
    for i, row in t.iterrows():
        if i % every and i != last:
            continue
        table.add_row(*(f"{int(v)}" if c == "layer" else _fmt(v) for c, v in row.items()))
    console.print(table)


def _fmt(v: float) -> str:
    """3 decimals for O(1) values, 3 significant digits for small gradient norms, 1 decimal for large ones."""
    if v != v:
        return "-"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3g}"
