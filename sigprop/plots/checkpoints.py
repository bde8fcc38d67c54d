"""A metric per layer x checkpoint: how rank collapse (or its absence) develops through a model's pre-training."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from sigprop.plots.signal import METRIC_LABELS
from sigprop.plots.style import TEXTWIDTH, paper_style, scale_note


def layer_by_checkpoint(df: pd.DataFrame, checkpoints: list[str], metric: str = "cos_mean", note: str = ""):
    """Left: the metric vs layer, one line per checkpoint (dark = early, light = late). Right: the same as a
    layer x checkpoint heatmap. df: tidy rows (block = checkpoint label, layer, metric, value, source)."""
    d = df[(df.metric == metric) & (df.source == "measured")]
    grid = d.pivot_table(index="layer", columns="block", values="value")[checkpoints]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(checkpoints)))
    short = [c.rsplit("@", 1)[-1] for c in checkpoints]
    with paper_style():
        fig, (ax, hm) = plt.subplots(1, 2, figsize=(TEXTWIDTH, 2.6), gridspec_kw={"width_ratios": [1.2, 1]})
        for c, label, color in zip(checkpoints, short, colors):
            ax.plot(grid.index, grid[c], marker="o", color=color, label=label)
        ax.set_xlabel("layer (0 = embedding)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric == "cos_mean":
            ax.set_ylim(-0.02, 1.02)
        ax.legend(title="checkpoint", loc="best", ncol=1 + len(checkpoints) // 6)
        vmin, vmax = (0.0, 1.0) if metric == "cos_mean" else (None, None)
        im = hm.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        hm.set_xticks(range(len(short)), short, rotation=45, ha="right")
        hm.set_ylabel("layer")
        hm.yaxis.set_major_locator(MaxNLocator(integer=True))
        hm.set_xlabel("checkpoint")
        hm.grid(False)
        fig.colorbar(im, ax=hm, label=METRIC_LABELS.get(metric, metric))
        fig.tight_layout()
        if note:
            scale_note(fig, note)
    return fig
