"""Sweep figures: per-layer bands over seeds (theory dashed), and the measured-theory gap against width."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from sigprop.plots.signal import METRIC_LABELS
from sigprop.plots.style import TEXTWIDTH, block_style, paper_style, scale_note


def _panel_keys(df: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    values = [list(dict.fromkeys(df[c])) for c in cols]
    return list(itertools.product(*values)) if cols else [()]


def _title(cols: Sequence[str], key: tuple) -> str:
    names = {"width": "d", "depth": "L"}
    return ", ".join(f"{names.get(c, c)}={v}" for c, v in zip(cols, key))


def band_figure(bands: pd.DataFrame, metric: str, groups: Sequence[str], note: str = ""):
    """Columns = widths, rows = the other sweep variables (depth, knobs); a line per block.

    Measured: mean over seeds with a ±1 std band; theory: its mean over seeds, dashed."""
    d = bands[bands.metric == metric]
    row_cols = [g for g in groups if g not in ("block", "width")]
    rows, widths = _panel_keys(d, row_cols), list(dict.fromkeys(d.width))
    blocks = list(dict.fromkeys(d.block))
    with paper_style():
        ncol = len(widths)
        fig, axes = plt.subplots(len(rows), ncol, figsize=(max(TEXTWIDTH, 1.9 * ncol), 1.75 * len(rows) + 0.7),
                                 squeeze=False, sharey=True)
        for r, rkey in enumerate(rows):
            sel = d
            for c, v in zip(row_cols, rkey):
                sel = sel[sel[c] == v]
            for c, w in enumerate(widths):
                ax = axes[r][c]
                for i, b in enumerate(blocks):
                    st = block_style(b, i)
                    m = sel[(sel.block == b) & (sel.width == w) & (sel.source == "measured")].sort_values("layer")
                    t = sel[(sel.block == b) & (sel.width == w) & (sel.source == "theory")].sort_values("layer")
                    if len(m):
                        ax.plot(m.layer, m["mean"], color=st["color"], marker=st["marker"], markersize=2.5, label=st["label"])
                        ax.fill_between(m.layer, m["mean"] - m["std"], m["mean"] + m["std"], color=st["color"], alpha=0.2, lw=0)
                    if len(t):
                        ax.plot(t.layer, t["mean"], color=st["color"], ls="--", lw=1.0, alpha=0.8)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_title(_title(["width", *row_cols], (w, *rkey)))
                if r == len(rows) - 1:
                    ax.set_xlabel("layer")
                if c == 0:
                    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        handles, labels = axes[0][0].get_legend_handles_labels()
        if (d.source == "theory").any():
            handles.append(plt.Line2D([], [], color="0.3", ls="--"))
            labels.append("theory (infinite width)")
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.6", alpha=0.3))
        labels.append("±1 std over seeds")
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.0))
        if note:
            scale_note(fig, note)
    return fig


def convergence_figure(conv: pd.DataFrame, slopes: pd.DataFrame, note: str = "", metric: str = "cos_mean"):
    """log-log: mean |measured - theory| (over layers, then seeds) against width, error bar = std over seeds,
    with the fitted power law per block and its slope in the legend (-1/2 where the theory is exact)."""
    by = [c for c in slopes.columns if c not in ("slope", "gap_min_width", "gap_max_width", "seed_spread")]
    with paper_style():
        fig, ax = plt.subplots(figsize=(TEXTWIDTH * 0.62, 2.6))
        for i, (_, s) in enumerate(slopes.iterrows()):
            sel = conv
            for c in by:
                sel = sel[sel[c] == s[c]]
            per_seed = sel.groupby(["width", "seed"])["gap"].mean().reset_index()
            stats = per_seed.groupby("width")["gap"].agg(["mean", "std"]).reset_index()
            st = block_style(s["block"], i)
            extra = ", ".join(f"{c}={s[c]}" for c in by if c != "block")
            label = f"{st['label']}{' (' + extra + ')' if extra else ''}: slope {s['slope']:+.2f}"
            ax.errorbar(stats.width, stats["mean"], yerr=stats["std"].fillna(0), color=st["color"], marker=st["marker"],
                        ls="none", capsize=2, label=label)
            w = np.geomspace(stats.width.min(), stats.width.max(), 20)
            ok = stats["mean"] > 0
            if ok.sum() >= 2 and np.isfinite(s["slope"]):
                c0 = np.polyfit(np.log(stats.width[ok]), np.log(stats["mean"][ok]), 1)[1]
                ax.plot(w, np.exp(c0) * w ** s["slope"], color=st["color"], lw=1.0)
        if len(conv):
            w = np.geomspace(conv.width.min(), conv.width.max(), 20)
            top = conv.groupby("width")["gap"].mean().max()
            ax.plot(w, top * 1.5 * (w / w[0]) ** -0.5, color="0.5", ls=":", lw=1.0, label=r"$\propto d^{-1/2}$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width d")
        ax.set_ylabel(f"|measured − theory| {METRIC_LABELS.get(metric, metric)}\n(mean over layers ≥ 1)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        if note:
            scale_note(fig, note)
    return fig


def coord_figure(df: pd.DataFrame, note: str = "", points: Sequence[str] = ("stream", "attn_out", "mlp_out")):
    """mup's coordinate check: rows = (block, probe point), columns = training steps; RMS against width,
    one line per layer (mean over seeds), coloured from the first layer (dark) to the last (light)."""
    from sigprop.plots.style import block_style

    names = {"stream": "residual stream", "attn_out": "attention branch", "mlp_out": "MLP branch"}
    blocks = list(dict.fromkeys(df.block))
    points = [p for p in points if p in set(df.point)]
    steps = sorted(df.step.unique())
    layers = sorted(df.layer.unique())
    cmap = plt.get_cmap("viridis")
    mean = df.groupby(["block", "point", "step", "layer", "width"])["value"].mean().reset_index()
    with paper_style():
        nrow, ncol = len(blocks) * len(points), len(steps)
        fig, axes = plt.subplots(nrow, ncol, figsize=(max(TEXTWIDTH, 1.25 * ncol), 1.15 * nrow + 0.6), squeeze=False,
                                 sharex=True)
        for bi, b in enumerate(blocks):
            for pi, pt in enumerate(points):
                r = bi * len(points) + pi
                sel = mean[(mean.block == b) & (mean.point == pt)]
                for c, step in enumerate(steps):
                    ax = axes[r][c]
                    for layer in layers:
                        d = sel[(sel.step == step) & (sel.layer == layer)].sort_values("width")
                        if len(d):
                            ax.plot(d.width, d.value, color=cmap(layer / max(layers[-1], 1)), marker="o", markersize=1.8, lw=0.8)
                    ax.set_xscale("log", base=2)
                    ax.set_yscale("log")
                    ax.yaxis.set_minor_formatter(NullFormatter())
                    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
                    if r == 0:
                        ax.set_title(f"step {step}")
                    if c == 0:
                        ax.set_ylabel(f"{block_style(b, bi)['label']}\n{names.get(pt, pt)} RMS", fontsize=6.5)
                    if r == nrow - 1:
                        ax.set_xlabel("width d")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(layers[0], layers[-1]))
        fig.tight_layout()
        bar = fig.colorbar(sm, ax=axes, shrink=0.5, label="layer", pad=0.01)
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if note:
            scale_note(fig, note)
    return fig
