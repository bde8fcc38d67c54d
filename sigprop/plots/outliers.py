"""Outlier-feature figures (the sequel, He et al. 2024): a statistic per layer over training, one panel per block,
a per-run scatter of two statistics, and the W8A8 loss increase per block."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sigprop.plots.style import COLUMN, TEXTWIDTH, block_style, layer_colors, paper_style, savefig, scale_note

LABELS = {"of_kurtosis": "kurtosis of neuron RMS (sequel's, $-1$)", "max_median_ratio": "max / median |activation|",
          "batch_corr_mean": "mean token correlation (batch)", "massive_ratio": "max / median |activation| (layer)",
          "sink_share": "attention on the first token", "eff_rank": "effective rank of the stream"}


def plot_layer_curves(curves: pd.DataFrame, path: str | Path, metric: str = "of_kurtosis", note: str = "",
                      titles: dict[str, str] | None = None, log: bool = True) -> list[Path]:
    """curves: rows (panel, layer, step, mean, std, n). One panel per `panel` value (a block, or block and optimiser),
    one line per layer (first to last: dark to light), a band of +-1 std over seeds (on a log axis floored at a tenth
    of the mean); one shared y axis."""
    panels = list(dict.fromkeys(curves.panel))
    with paper_style():
        fig, axes = plt.subplots(1, len(panels), figsize=(min(TEXTWIDTH, 2.3 * len(panels)), 2.2), sharey=True, squeeze=False)
        layers = sorted(curves.layer.unique())
        colors = dict(zip(layers, layer_colors(len(layers))))
        for ax, name in zip(axes[0], panels):
            d = curves[curves.panel == name]
            for layer, g in d.groupby("layer"):
                g = g.sort_values("step")
                ax.plot(g.step, g["mean"], color=colors[layer], label=f"layer {layer}")
                if g["n"].max() > 1:
                    lo, hi = g["mean"] - g["std"].fillna(0), g["mean"] + g["std"].fillna(0)
                    if log:  # a band reaching 0 would stretch a log axis over decades: floor it at a tenth of the mean
                        lo = lo.where(lo > g["mean"] / 10, g["mean"] / 10)
                    ax.fill_between(g.step, lo, hi, color=colors[layer], alpha=0.15, lw=0)
            n = int(d["n"].max()) if len(d) else 0
            # the seed count on its own line: four panels side by side leave ~2.3 in per title
            ax.set_title((titles or {}).get(name, name) + f"\n({n} seed{'s' * (n != 1)})")
            ax.set_xlabel("step")
            if log:
                ax.set_yscale("log")
        axes[0][0].set_ylabel(LABELS.get(metric, metric))
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="stream after")
        if note:
            scale_note(fig, note)
        fig.tight_layout()
        return savefig(fig, path)


def plot_scatter(points: pd.DataFrame, x: str, y: str, path: str | Path, note: str = "", logy: bool = True,
                 title: str = "") -> list[Path]:
    """points: one row per run with columns block, x, y and label; one marker/colour per block."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN, 2.4))
        for i, (block, d) in enumerate(points.groupby("block", sort=False)):
            st = block_style(block, i)
            ax.scatter(d[x], d[y], color=st["color"], marker=st["marker"], s=18, label=st["label"], zorder=3)
        ax.set_xlabel(LABELS.get(x, x))
        ax.set_ylabel(LABELS.get(y, y))
        if logy:
            ax.set_yscale("log")
        if title:
            ax.set_title(title)
        ax.legend()
        if note:
            scale_note(fig, textwrap.fill(note, 75))  # a column-wide figure: the stamp wraps instead of widening it
        fig.tight_layout()
        return savefig(fig, path)


def plot_quant_gap(table: pd.DataFrame, path: str | Path, note: str = "") -> list[Path]:
    """table: rows (block, label, mean, std, n): the eval-loss increase under W8A8 in %, bars with +-1 std over seeds."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN, 2.2))
        xs = np.arange(len(table))
        for i, r in enumerate(table.itertuples()):
            st = block_style(r.block, i)
            err = r.std if r.n > 1 else 0.0
            ax.bar(xs[i], r.mean, yerr=err or None, color=st["color"], capsize=3, width=0.6)
            ax.text(xs[i], max(r.mean, 0) + err, f"{r.mean:+.3f}%\n({r.n} seed{'s' * (r.n != 1)})", ha="center", va="bottom",
                    fontsize=6)
        ax.set_xticks(xs, list(table.label))
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_ylabel("eval-loss increase under W8A8 (%)")
        ax.set_title("int8 weights (per channel), activations (per tensor)")
        ax.margins(y=0.25)
        if note:
            scale_note(fig, textwrap.fill(note, 75))
        fig.tight_layout()
        return savefig(fig, path)
