"""`sigprop data`: build the tokenized corpus once (`prepare`), list what the cache holds (`info`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sigprop.cli.app import app, console
from sigprop.data import cache_entries, default_cache_dir, load_data

data_app = typer.Typer(help="Prepare and inspect tokenized datasets (corpus, BPE tokenizer, packed rows).", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@data_app.command("prepare")
def prepare_cmd(
    source: str = typer.Option("code", help="'code' (Python stdlib), 'packages' (stdlib + site-packages), 'codeparrot' (HF hub), or a .jsonl/.json/.parquet file or folder."),
    vocab_size: int = typer.Option(8192, help="BPE vocabulary size (259..65536)."),
    seq_len: int = typer.Option(128, help="Tokens per training sequence T (rows hold T+1)."),
    cache_dir: Path | None = typer.Option(None, help="Cache folder (default $SIGPROP_CACHE or ~/.cache/sigprop)."),
    max_bytes: int | None = typer.Option(None, help="Cap the corpus at this many bytes (codeparrot: 200 MB unless set)."),
    val_fraction: float = typer.Option(0.05, help="Fraction of files (by name hash) held out for validation."),
) -> None:
    """Build (or reuse) the tokenizer and packed token rows, then summarise them."""
    data = load_data(source, vocab_size=vocab_size, seq_len=seq_len, cache_dir=cache_dir, progress=True,
                     max_bytes=max_bytes, val_fraction=val_fraction)
    fp = data.fingerprint
    table = Table(title=f"sigprop data: {fp['source']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("files train / val", f"{fp['files_train']:,} / {fp['files_val']:,}"),
        ("bytes", _mb(fp["bytes"])),
        ("tokens train / val", f"{fp['tokens_train']:,} / {fp['tokens_val']:,}"),
        ("bytes per token", f"{fp['bytes'] / (fp['tokens_train'] + fp['tokens_val']):.2f}"),
        ("rows train / val", f"{len(data.train):,} / {len(data.val):,}  (each {data.seq_len + 1} tokens)"),
        ("vocab", f"{data.vocab_size:,}  special {data.special}"),
        ("python", fp["python"]),
        ("cache", str(data.path)),
        ("fingerprint", fp["sha256"][:16]),
    ):
        table.add_row(key, value)
    console.print(table)


@data_app.command("info")
def info_cmd(
    cache_dir: Path | None = typer.Option(None, help="Cache folder (default $SIGPROP_CACHE or ~/.cache/sigprop)."),
) -> None:
    """List the complete cache entries: source, size, vocabulary, rows and fingerprint."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    entries = cache_entries(root)
    if not entries:
        console.print(f"no datasets in {root}; build one with `sigprop data prepare`")
        return
    table = Table(title=f"sigprop datasets in {root}")
    for col in ("entry", "source", "files", "corpus", "vocab", "T", "rows train", "rows val", "on disk", "fingerprint"):
        left = col in ("entry", "source", "fingerprint")
        table.add_column(col, justify="left" if left else "right", no_wrap=left or col in ("corpus", "on disk"))
    for e in entries:
        fp = e["meta"]["fingerprint"]
        table.add_row(e["name"], fp["source"], f"{fp['files']:,}", _mb(fp["bytes"]), f"{fp['vocab_size']:,}", str(fp["seq_len"]),
                      f"{fp['rows_train']:,}", f"{fp['rows_val']:,}", _mb(e["bytes_on_disk"]), fp["sha256"][:12])
    console.print(table)
