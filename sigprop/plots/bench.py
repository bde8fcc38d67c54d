"""The `sigprop bench` figure: speed-up, parameters, MFU and memory per block (bars), or time and memory
per token against sequence length (lines) when the benchmark swept T."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import Patch
import numpy as np
import pandas as pd

from sigprop.plots.style import TEXTWIDTH, block_style, paper_style, savefig, scale_note

_MODE_HATCH = {"train": "", "infer": "///"}


def _note(df: pd.DataFrame) -> str:
    s = df.attrs.get("settings", {})
    peak = df.attrs.get("peak_flops") or float("nan")
    return (
        f"L={s.get('depth')}, d={s.get('width')}, H={s.get('heads')}, V={s.get('vocab')}, {s.get('dtype')} on "
        f"{s.get('device')} ({s.get('threads')} threads{', malloc tuned' if s.get('malloc_tuned') else ''}{', compiled' if s.get('compile') else ''}), "
        f"median of {s.get('repeats')} interleaved repeats, matmul peak {peak / 1e12:.2f} TFLOP/s"
    )


def _bars(ax, df: pd.DataFrame, column: str, scale: float, ylabel: str, baseline: float | None = None,
          ideal: bool = False) -> None:
    """One bar per block, one group per mode (infer hatched); `ideal` marks the FLOP-count speed-up."""
    blocks = list(dict.fromkeys(df.block))
    modes = list(dict.fromkeys(df["mode"]))
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        sub = df[df["mode"] == mode].set_index("block")
        for i, b in enumerate(blocks):
            if b not in sub.index:
                continue
            st = block_style(b, i)
            ax.bar(i + (j - (len(modes) - 1) / 2) * width, sub.loc[b, column] * scale, width, color=st["color"],
                   hatch=_MODE_HATCH.get(mode, ""), edgecolor="white", linewidth=0.4)
            if ideal:  # the FLOP-count speed-up, and this block's own min-max spread over repeats
                x = i + (j - (len(modes) - 1) / 2) * width
                r, t = sub.loc[b, "ratio"], sub.loc[b, "step_ms"]
                lo, hi = r * t / sub.loc[b, "step_ms_max"], r * t / sub.loc[b, "step_ms_min"]
                ax.errorbar(x, r, yerr=[[max(0.0, r - lo)], [max(0.0, hi - r)]], color="0.25", lw=0.6, capsize=1.5)
                ax.plot([x - width / 2, x + width / 2], [sub.loc[b, "ideal"]] * 2, color="k", lw=1.0,
                        label="FLOP ideal" if i == 0 and j == 0 else None)
    if baseline is not None:
        ax.axhline(baseline, color="0.3", lw=0.6, ls="--")
    ax.set_xticks(range(len(blocks)), [block_style(b, i)["label"] for i, b in enumerate(blocks)], rotation=35, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)


def plot_bench(df: pd.DataFrame, path: str | Path) -> list[Path]:
    """Write the benchmark figure (PNG + PDF) at `path`; returns the written files."""
    fast = df[df.path == "fast"]
    if df.seq.nunique() > 1:
        return _plot_sweep(df, path)
    with paper_style():
        fig, axes = plt.subplots(1, 4, figsize=(TEXTWIDTH, 2.0))
        _bars(axes[0], fast, "ratio", 1.0, "throughput / Pre-LN", baseline=1.0, ideal=True)
        first = fast[fast["mode"] == fast["mode"].iloc[0]]  # parameters do not depend on the mode
        _bars(axes[1], first, "params_vs_base", 100.0, "params vs Pre-LN (%)", baseline=0.0)
        _bars(axes[2], fast, "mfu", 100.0, "MFU (%)")
        _bars(axes[3], fast, "mem_peak_mb", 1.0, "peak memory (MB)")
        lo = min(0.9, fast.ratio.min() * 0.95)
        top = (fast.ratio * fast.step_ms / fast.step_ms_min).max()
        axes[0].set_ylim(min(lo, (fast.ratio * fast.step_ms / fast.step_ms_max).min() * 0.97), max(1.1, top * 1.03, fast.ideal.max() * 1.05))
        fig.tight_layout(rect=(0, 0, 1, 0.88))
        handles, labels = axes[0].get_legend_handles_labels()
        modes = list(dict.fromkeys(fast["mode"]))
        if len(modes) > 1:  # bars are coloured per block (the x labels say which): the legend explains the hatching
            handles += [Patch(facecolor="0.8", edgecolor="0.3", hatch=_MODE_HATCH.get(m, ""), lw=0.4) for m in modes]
            labels += modes
        fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.0))
        scale_note(fig, _note(df))
        return savefig(fig, path)


def _plot_sweep(df: pd.DataFrame, path: str | Path) -> list[Path]:
    """Time and activation memory per token against T; explicit T x T paths dashed."""
    with paper_style():
        modes = list(dict.fromkeys(df["mode"]))
        fig, axes = plt.subplots(len(modes), 2, figsize=(TEXTWIDTH, 2.1 * len(modes)), squeeze=False)
        for row, mode in enumerate(modes):
            sub = df[df["mode"] == mode]
            for i, ((block, p), g) in enumerate(sub.groupby(["block", "path"], sort=False)):
                st = block_style(block, i)
                g = g.sort_values("seq")
                kw = dict(color=st["color"], marker=st["marker"], ls="--" if p == "explicit" else "-",
                          label=st["label"] + (" (explicit T×T)" if p == "explicit" else ""))
                axes[row, 0].plot(g.seq, 1e6 / g.tokens_per_s, **kw)
                axes[row, 1].plot(g.seq, g.mem_step_kb_per_token, **kw)
            axes[row, 0].set_ylabel(f"{mode}: µs per token")
            axes[row, 1].set_ylabel(f"{mode}: KB per token above weights")
            for ax in axes[row]:
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xticks(sorted(df.seq.unique()), [str(t) for t in sorted(df.seq.unique())])
                ax.set_xlabel("sequence length T")
        axes[0, 1].legend(loc="upper left")
        fig.tight_layout()
        scale_note(fig, _note(df) + f", {int(np.median(df.batch * df.seq))} tokens/step")
        return savefig(fig, path)
