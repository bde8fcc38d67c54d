"""Markdown tables for benchmarks/README.md from the JSON files that `sigprop bench --json` wrote.

    .venv/bin/python benchmarks/summary.py benchmarks/results/cpu_scale_fp32.json [...]
    .venv/bin/python benchmarks/summary.py --side-by-side FILE.json [...]   # paired ratios, one column per run and mode
"""

from __future__ import annotations

import argparse
import sys

from sigprop.perf.benchmark import format_rows, load_json
from sigprop.errors import SigpropError


#: Markdown header -> `format_rows` key (the CLI table's column names, spelled out).
COLUMNS = {
    "block": "block", "mode": "mode", "T": "T", "params": "params", "vs Pre-LN": "vs base", "tokens/s": "tokens/s",
    "ratio": "ratio", "paired ratio": "paired", "FLOP ideal": "ideal", "MFU": "MFU", "peak MB": "peak MB",
    "step KB/token": "step KB/tok",
}


def markdown(path: str) -> str:
    """One table: block, mode, params, tokens/s, ratio (medians), paired ratio, FLOP ideal, MFU, memory."""
    df = load_json(path)
    s = df.attrs["settings"]
    head = (
        f"**{path}**: L={s['depth']}, d={s['width']}, H={s['heads']}, V={s['vocab']}, T={','.join(map(str, s['seqs']))}, "
        f"{s['dtype']}, {s['device']}, {s.get('threads', '?')} thread(s){', malloc tuned' if s.get('malloc_tuned') else ''}, median of {s['repeats']} interleaved repeats, "
        f"matmul peak {df.attrs['peak_flops'] / 1e9:.0f} GFLOP/s\n\n"
    )
    cols = "| " + " | ".join(COLUMNS) + " |"
    lines = [cols, "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[k] for k in COLUMNS.values()) + " |" for row in format_rows(df)]
    return head + "\n".join(lines) + "\n"


def side_by_side(paths: list[str]) -> str:
    """Paired ratio to the baseline (ratio of medians in brackets): a row per block (and attention implementation, where
    a run timed several), a column per run and mode."""
    columns, cells, labels, ideal = [], {}, {}, {}
    for path in paths:
        df = load_json(path)
        s = df.attrs["settings"]
        for mode in s["modes"]:
            col = f"{s['depth']}×{s['width']} V={s['vocab']} {s['dtype']} {mode}"
            columns.append(col)
            for r in df[(df["mode"] == mode) & (df["path"] != "explicit")].itertuples():
                labels[r.block, r.path] = r.label  # SAS-P, and SAS-P (fused) where `--attn-impl` asked for several
                cells[(r.block, r.path), col] = f"{r.ratio_paired:.2f} ({r.ratio:.2f})"
                ideal[col] = max(ideal.get(col, 1.0), r.ideal)
    head = "| ratio to Pre-LN, paired (of medians) | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for key, label in labels.items():
        if key != ("pre-ln", "fast"):
            lines.append(f"| {label} | " + " | ".join(cells.get((key, c), "-") for c in columns) + " |")
    lines.append("| FLOP ideal (SAS, SAS-P) | " + " | ".join(f"{ideal[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Markdown tables from `sigprop bench --json` files.")
    ap.add_argument("files", nargs="+", metavar="FILE.json", help="JSON files written by `sigprop bench --json`")
    ap.add_argument("--side-by-side", action="store_true", help="one paired-ratio table: a column per file and mode")
    a = ap.parse_args(argv)
    try:
        print(side_by_side(a.files) if a.side_by_side else "\n".join(markdown(p) for p in a.files))
    except SigpropError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
