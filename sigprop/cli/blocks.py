"""`sigprop blocks`: every preset, its knobs, parameter count and what it removes."""

from __future__ import annotations

import typer
from rich.table import Table

from sigprop.blocks import PRESETS, ModelConfig, build_model, get_spec
from sigprop.cli.app import app, console, split_list


def _knob_text(name: str) -> str:
    spec = PRESETS[name]
    diff = spec.diff(PRESETS["pre-ln"])
    diff.pop("trainable", None)
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "-"


@app.command("blocks")
def blocks_cmd(
    block: str = typer.Option("all", "--block", "-b", help="Comma-separated presets, or 'all'."),
    depth: int = typer.Option(18, help="Number of blocks L."),
    width: int = typer.Option(768, help="Model width d."),
    heads: int = typer.Option(12, help="Attention heads H."),
    vocab: int = typer.Option(50000, help="Vocabulary size (paper: ~50K BPE)."),
    context: int = typer.Option(1024, help="Learned position embeddings (GPT-2: 1024)."),
    sets: list[str] = typer.Option([], "--set", help="Override a knob, e.g. --set beta_ff=0.2 (repeatable)."),
    knobs: bool = typer.Option(False, "--knobs", help="Also show each preset's knobs that differ from Pre-LN."),
) -> None:
    """Table of block presets: trainable parameters at the given size and what each block removes."""
    names = list(PRESETS) if block == "all" else split_list(block)
    cfg = ModelConfig(depth=depth, width=width, heads=heads, vocab_size=vocab, context=context)
    base = build_model(get_spec("pre-ln", sets), cfg).num_params()
    table = Table(title=f"sigprop blocks at L={depth}, d={width}, H={heads}, V={vocab}")
    for col in ("block", "params", "vs Pre-LN", "per block", "removes"):
        table.add_column(col, justify="right" if col in ("params", "vs Pre-LN", "per block") else "left")
    if knobs:
        table.add_column("knobs (vs Pre-LN)")
    for name in names:
        spec = get_spec(name, sets)
        model = build_model(spec, cfg)
        n = model.num_params()
        per_block = sum(p.numel() for p in model.blocks[-1].parameters() if p.requires_grad)
        row = [spec.name, f"{n / 1e6:.2f}M", f"{100 * (n / base - 1):+.1f}%", f"{per_block / width**2:.2f} d²", spec.removes]
        table.add_row(*row, *([_knob_text(spec.name) if spec.name in PRESETS else "-"] if knobs else []))
    console.print(table)
