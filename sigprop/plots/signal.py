"""Signal-propagation figures: metrics vs depth (measured vs theory) and kernel heatmaps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from sigprop.plots.style import TEXTWIDTH, block_style, paper_style, scale_note

METRIC_LABELS = {
    "cos_mean": "mean token cosine",
    "eff_rank": "effective rank",
    "stable_rank": "stable rank",
    "rank1_residual": "rank-1 residual",
    "norm_sq": r"$\|x\|^2/d$",
    "of_kurtosis": "kurtosis of neuron RMS ($-1$)",
    "max_median_ratio": "max / median |activation|",
    "batch_corr_mean": "mean token correlation (batch)",
    "sink_share": "attention on the first token",
    "attn_entropy_ratio": "attention entropy / max",
}


def depth_curves(df: pd.DataFrame, metrics: tuple[str, ...] = ("cos_mean", "eff_rank"), note: str = ""):
    """One panel per metric: value vs layer for each block; measured solid with markers, theory dashed.

    df: tidy rows with columns block, layer, metric, value, source (measured | theory).
    """
    with paper_style():
        fig, axes = plt.subplots(1, len(metrics), figsize=(TEXTWIDTH, 2.5), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for i, block in enumerate(dict.fromkeys(df.block)):
                st = block_style(block, i)
                for source, ls, marker in (("measured", "-", st["marker"]), ("theory", "--", None)):
                    d = df[(df.block == block) & (df.metric == metric) & (df.source == source)].sort_values("layer")
                    if d.empty:
                        continue
                    ax.plot(d.layer, d.value, ls=ls, marker=marker, color=st["color"],
                            label=st["label"] if source == "measured" else None, alpha=1.0 if source == "measured" else 0.8)
            ax.set_xlabel("layer (0 = embedding)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            if metric == "cos_mean":
                ax.set_ylim(-0.02, 1.02)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if (df.source == "theory").any():
            handles.append(plt.Line2D([], [], color="0.3", ls="--"))
            labels.append("theory (infinite width)")
        fig.tight_layout(rect=(0, 0, 1, 0.86 if len(labels) > 5 else 0.92))
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), bbox_to_anchor=(0.5, 1.0))
        if note:
            scale_note(fig, note)
    return fig


def kernel_grid(kernels: dict[str, dict[int, np.ndarray]], note: str = "", layers: tuple[int, ...] | None = None):
    """Rows = blocks, columns = first / middle / last layer: heatmaps of the token cosine kernel."""
    blocks = list(kernels)
    depth = max(max(k) for k in kernels.values())
    layers = layers or (0, depth // 2, depth)
    with paper_style():
        # constrained layout sizes the square heatmaps and the colour bar together: no empty band, no floating bar
        fig, axes = plt.subplots(len(blocks), len(layers), figsize=(1.3 * len(layers) + 0.7, 1.3 * len(blocks) + 0.3),
                                 squeeze=False, layout="constrained")
        im = None
        for r, block in enumerate(blocks):
            for c, layer in enumerate(layers):
                ax = axes[r][c]
                im = ax.imshow(kernels[block][layer], vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if r == 0:
                    ax.set_title(f"layer {layer}")
                if c == 0:
                    ax.set_ylabel(block_style(block, r)["label"])
        fig.colorbar(im, ax=axes, shrink=0.9, label="token cosine")
        if note:
            scale_note(fig, note)
    return fig
