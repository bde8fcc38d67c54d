"""Markdown tables for benchmarks/README.md from the JSON files that `sigprop bench --json` wrote.

    .venv/bin/python benchmarks/summary.py benchmarks/results/cpu_scale_fp32.json [...]
"""

from __future__ import annotations

import sys

from sigprop.bench import load_json


def markdown(path: str) -> str:
    """One table: block, mode, params, tokens/s, ratio (medians), paired ratio, FLOP ideal, MFU, memory."""
    df = load_json(path)
    s = df.attrs["settings"]
    head = (
        f"**{path}**: L={s['depth']}, d={s['width']}, H={s['heads']}, V={s['vocab']}, T={','.join(map(str, s['seqs']))}, "
        f"{s['dtype']}, {s['device']}, {s.get('threads', '?')} thread(s){', malloc tuned' if s.get('malloc_tuned') else ''}, median of {s['repeats']} interleaved repeats, "
        f"matmul peak {df.attrs['peak_flops'] / 1e9:.0f} GFLOP/s\n\n"
    )
    cols = "| block | mode | T | params | vs Pre-LN | tokens/s | ratio | paired ratio | FLOP ideal | MFU | peak MB | step KB/token |"
    lines = [cols, "|" + "---|" * (cols.count("|") - 1)]
    for r in df.itertuples():
        paired = f"{r.ratio_paired:.3f}" if hasattr(r, "ratio_paired") else "-"
        lines.append(
            f"| {r.label} | {r.mode} | {r.seq} | {r.params / 1e6:.2f}M | {100 * r.params_vs_base:+.1f}% | {r.tokens_per_s:,.0f} | "
            f"{r.ratio:.3f} | {paired} | {r.ideal:.3f} | {100 * r.mfu:.0f}% | {r.mem_peak_mb:,.0f} | {r.mem_step_kb_per_token:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(markdown(p))
