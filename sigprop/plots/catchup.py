"""The catch-up study's figures: per-step gap to Pre-LN against tokens (log x), and final loss against peak LR.

Both take tidy frames (one row per point) so the recipe's numbers and the figure come from the same table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from sigprop.plots.paper import _note
from sigprop.plots.style import COLUMN, TEXTWIDTH, block_style, paper_style, savefig


def _log_tokens(ax) -> None:
    """Log x in tokens with 1-2-5 ticks (1 only when the axis spans more than two decades)."""
    lo, hi = ax.get_xlim()
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if hi / max(lo, 1e-9) < 300 else (1.0,)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _panels(n: int, height: float = 2.3):
    width = min(TEXTWIDTH, max(COLUMN, 2.4 * n))
    fig, axes = plt.subplots(1, n, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def plot_gap_vs_tokens(curves: pd.DataFrame, path: str | Path, note: str = "", floor: float = 1.0,
                       reach: dict | None = None) -> list[Path]:
    """curves: size, block, tokens, mean, std, n (gap to Pre-LN in % per eval). One panel per size; each block
    a line with its ± std band over seeds; the grey band is ±`floor` % (the smallest gap that counts as a match).
    `reach[(size, block)]` = tokens from which the gap stays at or below its band (a dashed vertical line)."""
    sizes = list(dict.fromkeys(curves["size"]))
    with paper_style():
        fig, axes = _panels(max(1, len(sizes)))
        for ax, size in zip(axes, sizes):
            d = curves[curves["size"] == size]
            ax.axhspan(-floor, floor, color="0.85", lw=0, zorder=0, label=f"±{floor:g}% (match floor)")
            ax.axhline(0, color="0.3", lw=0.6, ls=":")
            for block, g in d.groupby("block", sort=False):
                st = block_style(block)
                g = g.sort_values("tokens")
                n = int(g["n"].max())
                ax.plot(g["tokens"], g["mean"], color=st["color"], label=f"{st['label']} ({n} seed{'s' * (n != 1)})")
                if n >= 2:
                    ax.fill_between(g["tokens"], g["mean"] - g["std"], g["mean"] + g["std"], color=st["color"], alpha=0.2, lw=0)
                x = (reach or {}).get((size, block))
                if x is not None:
                    ax.axvline(x, color=st["color"], lw=0.8, ls="--")
            _log_tokens(ax)
            ax.set_title(f"{size} (depth x width)")
            ax.set_xlabel("tokens seen")
            top = float(np.nanmax(d["mean"] + d["std"].fillna(0))) if len(d) else 10.0
            low = float(np.nanmin(d["mean"] - d["std"].fillna(0))) if len(d) else -2.0
            ax.set_ylim(min(-2 * floor, low - 0.5), max(3 * floor, min(1.05 * top, 40.0)))
        axes[0].set_ylabel("eval-loss gap to Pre-LN (%)")
        handles, labels = [], []
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h), labels.append(lab)
        axes[-1].legend(handles, labels, loc="best", title="shaded: ± 1 std over seeds", title_fontsize=6)
        fig.tight_layout()
        _note(fig, note)
    return savefig(fig, path)


def plot_loss_vs_lr(grid: pd.DataFrame, path: str | Path, note: str = "") -> list[Path]:
    """grid: size, block, lr, mean, std, n (final eval loss). One panel per size, one curve per block over the
    peak-LR grid, error bars where there are seeds, the best LR of each block filled."""
    sizes = list(dict.fromkeys(grid["size"]))
    with paper_style():
        fig, axes = _panels(max(1, len(sizes)))
        for ax, size in zip(axes, sizes):
            d = grid[grid["size"] == size]
            for block, g in d.groupby("block", sort=False):
                st = block_style(block)
                g = g.sort_values("lr")
                ax.errorbar(g["lr"], g["mean"], yerr=g["std"].where(g["n"] >= 2), color=st["color"], marker=st["marker"],
                            mfc="white", label=st["label"], capsize=2)
                best = g.loc[g["mean"].idxmin()] if g["mean"].notna().any() else None
                if best is not None:
                    ax.plot([best["lr"]], [best["mean"]], marker=st["marker"], color=st["color"], mfc=st["color"], ls="none", zorder=4)
            ax.set_xscale("log")
            lrs = sorted(set(d["lr"]))
            ax.set_xticks(lrs, [f"{x:g}" for x in lrs])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("peak learning rate")
            ax.set_title(f"{size} (depth x width)")
        axes[0].set_ylabel("final eval loss")
        axes[-1].legend(loc="upper right", title="filled: the block's best LR", title_fontsize=6)
        fig.tight_layout()
        _note(fig, note)
    return savefig(fig, path)


def plot_dynamics(evals: pd.DataFrame, cos: pd.DataFrame, path: str | Path, note: str = "") -> list[Path]:
    """Two panels per size against tokens (log x): eval loss per block, and cos_mean of the last block's output
    (1 = every token the same: rank collapse). evals: size, block, tokens, eval_loss; cos: size, block, tokens,
    value (both already averaged over seeds). The plateau of a block shows as flat loss while cos_mean is high."""
    sizes = list(dict.fromkeys(evals["size"]))
    with paper_style():
        fig, axes = plt.subplots(2, max(1, len(sizes)), figsize=(min(TEXTWIDTH, max(COLUMN, 2.4 * len(sizes))), 4.2),
                                 squeeze=False, sharex="col")
        for j, size in enumerate(sizes):
            top, bottom = axes[0][j], axes[1][j]
            for block, g in evals[evals["size"] == size].groupby("block", sort=False):
                st = block_style(block)
                g = g.sort_values("tokens")
                top.plot(g["tokens"], g["eval_loss"], color=st["color"], label=st["label"])
                c = cos[(cos["size"] == size) & (cos.block == block)].sort_values("tokens")
                bottom.plot(c["tokens"], c["value"], color=st["color"], marker=st["marker"], label=st["label"])
            top.set_title(f"{size} (depth x width)")
            for ax in (top, bottom):
                _log_tokens(ax)
            bottom.set_ylim(0, 1.02)
            bottom.set_xlabel("tokens seen")
        axes[0][0].set_ylabel("eval loss")
        axes[1][0].set_ylabel("cos_mean, last block")
        axes[0][-1].legend(loc="upper right")
        fig.tight_layout()
        _note(fig, note)
    return savefig(fig, path)
