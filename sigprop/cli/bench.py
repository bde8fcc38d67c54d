"""`sigprop bench`: throughput, parameters, peak memory and MFU of blocks, side by side in one run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.table import Table

from sigprop.perf.benchmark import DEFAULT_BLOCKS, bench, format_rows, save_json
from sigprop.perf.probe_overhead import PROBE_BUDGET, probe_overhead
from sigprop.cli.app import app, console, pick_vocab, split_list, vocab_alias


#: The columns a narrow terminal (< FULL_WIDTH characters) keeps; the JSON always has them all.
COMPACT = ("block", "mode", "T", "tokens/s", "paired", "ideal", "MFU", "peak MB")
FULL_WIDTH = 130


def bench_table(df: pd.DataFrame, width: int = 200) -> Table:
    """The benchmark as a rich table (one row per block, path, mode and seq); the COMPACT columns below FULL_WIDTH."""
    s = df.attrs.get("settings", {})
    peak = df.attrs.get("peak_flops") or float("nan")
    title = (
        f"sigprop bench: L={s.get('depth')}, d={s.get('width')}, H={s.get('heads')}, V={s.get('vocab')}, "
        f"{s.get('dtype')} on {s.get('device')} ({s.get('threads')} threads){' compiled' if s.get('compile') else ''}{', attn_impl ' + ','.join(s['attn_impls']) if list(s.get('attn_impls') or ['auto']) != ['auto'] else ''}{', malloc tuned' if s.get('malloc_tuned') else ''}; "
        f"median of {s.get('repeats')} interleaved repeats (paired: median of per-repeat ratios); matmul peak {peak / 1e12:.2f} TFLOP/s"
    )
    rows = format_rows(df)
    cols = list(rows[0]) if rows else list(COMPACT)
    if width < FULL_WIDTH:
        cols = [c for c in cols if c in COMPACT]
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="left" if c in ("block", "mode") else "right", no_wrap=c == "block")
    for row in rows:
        table.add_row(*(row[c] for c in cols))
    return table


def probe_table(df: pd.DataFrame, budget: float) -> Table:
    table = Table(title=f"probe overhead: one probe pass every N training steps (default N keeps it <= {100 * budget:.0f}%)")
    for c in ("block", "train ms/step", "probe ms", "probe / step", "default N", "overhead at N", "before: probe ms", "before / step"):
        table.add_column(c, justify="left" if c == "block" else "right")
    for r in df.itertuples():
        table.add_row(r.block, f"{r.step_ms:.1f}", f"{r.probe_ms:.1f}", f"{100 * r.probe_per_step:.1f}%", str(r.cadence), f"{100 * r.overhead:.2f}%",
                      f"{r.probe_before_ms:.1f}", f"{100 * r.probe_before_per_step:.1f}%")
    return table


@app.command("bench")
def bench_cmd(
    blocks: str = typer.Option(",".join(DEFAULT_BLOCKS), "--blocks", "-b", help="Comma-separated presets; Pre-LN, the baseline of every ratio, is always added."),
    depth: int = typer.Option(6, help="Number of blocks L (paper: 18)."),
    width: int = typer.Option(256, help="Model width d (paper: 768)."),
    heads: int = typer.Option(4, help="Attention heads H (paper: 12)."),
    seq: str = typer.Option("128", help="Sequence length(s) T, comma-separated for a memory sweep: 128,512,2048,4096."),
    batch: int = typer.Option(None, help="Sequences per step; default: --tokens // T (same tokens at every T)."),
    tokens: int = typer.Option(2048, help="Tokens per step when --batch is not given."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Vocabulary size [default: 8192] (paper: ~50K)."),
    vocab: int = vocab_alias(),
    dtype: str = typer.Option("fp32", help="fp32 | bf16 (autocast)."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    mode: str = typer.Option("train", help="train | infer | train,infer (both, interleaved in one run)."),
    repeats: int = typer.Option(5, help="Timed repeats per block (median reported), interleaved across blocks."),
    warmup: int = typer.Option(2, help="Untimed warm-up steps per block."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile every model."),
    explicit: bool = typer.Option(False, "--explicit", help="Also time shaped attention on its explicit T x T path."),
    attn_impl: str = typer.Option("auto", "--attn-impl", help="Shaped attention's mix: auto | sdpa | fused | compile, comma-separated to time several side by side (auto: fused on CUDA with triton, else sdpa; docs/performance.md)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory (one extra step per row)."),
    threads: int = typer.Option(None, help="torch intra-op threads for the run (default: torch's; 1 is fairest on a shared machine)."),
    tune_malloc: bool = typer.Option(True, "--tune-malloc/--no-tune-malloc", help="CPU: keep freed memory in glibc's heap (no page faults on big activations each step), as `sigprop train` does."),
    probes: bool = typer.Option(False, "--probes", help="Also measure the probe-pass overhead per training step."),
    probe_batch: int = typer.Option(8, "--probe-batch", help="Sequences in the probed batch of --probes (training's probe_batch; the cpu scale's is 4)."),
    json_path: Path = typer.Option(None, "--json", help="Write the results as JSON to this file."),
    out: Path = typer.Option(None, "--out", help="Write the bar figure (PNG + PDF) into this folder."),
) -> None:
    """Tokens/s, ratio to Pre-LN, parameters, MFU and peak memory of each block, measured side by side."""
    vocab = pick_vocab(vocab_size, vocab) or 8192
    df = bench(
        split_list(blocks), depth=depth, width=width, heads=heads, seq=seq, batch=batch, tokens=tokens,
        vocab=vocab, dtype=dtype, device=device, mode=mode, repeats=repeats, warmup=warmup, compile=compile,
        explicit=explicit, attn_impl=split_list(attn_impl), memory=memory, threads=threads, tune_malloc=tune_malloc,
    )
    console.print(bench_table(df, console.width))
    pdf = None
    if probes:
        t = int(df.seq.min())  # at the shortest sequence of the run
        pdf = probe_overhead(
            split_list(blocks), depth=depth, width=width, heads=heads, seq=t,
            batch=batch or max(1, tokens // t), probe_batch=probe_batch, vocab=vocab, dtype=dtype, device=device,
            repeats=repeats, warmup=warmup, threads=threads,
        )
        console.print(probe_table(pdf, PROBE_BUDGET))
    if json_path is not None:
        console.print(f"wrote {save_json(df, json_path, pdf)}")
    if out is not None:
        from sigprop.plots.bench import plot_bench

        for p in plot_bench(df, out / "bench"):
            console.print(f"wrote {p}")
