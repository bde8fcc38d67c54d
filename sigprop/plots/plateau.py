"""The plateau figure: tokens to leave SAS-P's early plateau against each factor, Pre-LN as the reference."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import EngFormatter, NullFormatter

from sigprop.plots.paper import _note
from sigprop.plots.style import TEXTWIDTH, block_style, paper_style, savefig

TITLES = {"beta_ff": r"$\beta_{FF}$ at init", "lr": "peak learning rate", "batch_size": "batch (sequences)", "depth": "depth L"}
#: the paper's setting of each factor (paper.md §3.1; beta_FF 0.1 in its skipless config at every depth)
PAPER = {"beta_ff": 0.1, "lr": 1e-3, "batch_size": 128, "depth": 18}


def plot_plateau(frame: pd.DataFrame, path: str | Path, note: str, loss: float) -> list[Path]:
    """frame: factor, value, base, block, n, mean, std (tokens to eval loss `loss`). One panel per factor."""
    factors = list(dict.fromkeys(frame.factor))
    with paper_style():
        fig, axes = plt.subplots(1, len(factors), figsize=(TEXTWIDTH, 2.3), squeeze=False, sharey=True)
        for ax, factor in zip(axes[0], factors):
            d = frame[frame.factor == factor]
            for block, g in d.groupby("block", sort=False):
                st = block_style(block)
                g = g.sort_values("value")
                ax.errorbar(g.value, g["mean"], yerr=g["std"], color=st["color"], marker=st["marker"], capsize=2, label=st["label"])
                b = g[g.base]
                ax.plot(b.value, b["mean"], ls="none", marker="o", ms=8, mfc="none", mec="0.2", mew=0.8)
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(d.value)), [f"{v:g}" for v in sorted(set(d.value))])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{TITLES.get(factor, factor)} (paper: {PAPER.get(factor, '?'):g})")
        axes[0][0].set_ylabel(f"tokens to eval loss {loss:g}")
        axes[0][0].yaxis.set_major_formatter(EngFormatter(sep=""))
        axes[0][-1].legend(loc="upper right", title="ring: base setting", title_fontsize=6)
        fig.tight_layout()
        _note(fig, note)
    return savefig(fig, path)
