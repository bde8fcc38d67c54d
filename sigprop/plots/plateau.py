"""The plateau figure: tokens to leave SAS-P's early plateau against each factor, Pre-LN as the reference."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import EngFormatter, NullFormatter

from sigprop.plots.paper import _note
from sigprop.plots.style import TEXTWIDTH, block_style, paper_style, savefig

TITLES = {"beta_ff": r"$\beta_{FF}$ at init", "lr": r"peak LR ($\times 10^{-3}$)", "batch_size": "batch (sequences)", "depth": "depth L"}
#: the paper's setting of each factor (paper.md §3.1; beta_FF 0.1 in its skipless config at every depth)
PAPER = {"beta_ff": 0.1, "lr": 1e-3, "batch_size": 128, "depth": 18}


def _tick(factor: str, v: float) -> str:
    return f"{v * 1e3:.3g}" if factor == "lr" else f"{v:.3g}"


def plot_plateau(frame: pd.DataFrame, path: str | Path, note: str, loss: float) -> list[Path]:
    """frame: factor, value, base, block, n, mean, std (tokens to eval loss `loss`). One panel per factor; Pre-LN's
    base setting as a dashed line where Pre-LN has no such knob (beta_FF); values without runs yet are listed."""
    factors = list(dict.fromkeys(frame.factor))
    ref = frame[frame.base & (frame.block == "pre-ln")]["mean"].dropna()
    with paper_style():
        fig, axes = plt.subplots(1, len(factors), figsize=(TEXTWIDTH, 2.6), squeeze=False, sharey=True)
        for ax, factor in zip(axes[0], factors):
            d = frame[frame.factor == factor]
            for block, g in d.groupby("block", sort=False):
                st = block_style(block)
                g = g.sort_values("value")
                ax.errorbar(g.value, g["mean"], yerr=g["std"], color=st["color"], marker=st["marker"], capsize=2, label=st["label"])
                b = g[g.base]
                ax.plot(b.value, b["mean"], ls="none", marker="o", ms=8, mfc="none", mec="0.2", mew=0.8)
            if "pre-ln" not in set(d.block) and len(ref):
                ax.axhline(ref.iloc[0], color=block_style("pre-ln")["color"], ls="--", lw=0.8)
            values = sorted(set(d.value))
            ax.set_xscale("log")
            ax.set_xticks(values, [_tick(factor, v) for v in values])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(values[0] / 1.5, values[-1] * 1.5)
            ax.set_title(f"{TITLES.get(factor, factor)}\n(paper: {_tick(factor, PAPER[factor]) if factor in PAPER else '?'})")
            pending = sorted(set(d.value[d.n == 0]))
            if pending:
                ax.text(0.03, 0.97, "no runs yet: " + ", ".join(_tick(factor, v) for v in pending), transform=ax.transAxes,
                        fontsize=5.5, color="0.45", va="top")
        axes[0][0].set_ylabel(f"tokens to eval loss {loss:g}")
        axes[0][0].yaxis.set_major_formatter(EngFormatter(sep=""))
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h), labels.append(lab)
        handles.append(plt.Line2D([], [], ls="none", marker="o", ms=8, mfc="none", mec="0.2", mew=0.8))
        labels.append("base setting")
        if len(ref):
            handles.append(plt.Line2D([], [], color=block_style("pre-ln")["color"], ls="--", lw=0.8))
            labels.append("Pre-LN, base setting")
        fig.tight_layout()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 0.98))
        _note(fig, note)
    return savefig(fig, path)
