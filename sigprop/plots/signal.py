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

    df: tidy rows with columns block, layer, metric, value, source (measured | theory). The legend above has one
    entry per measured curve (its block's colour and marker); a second legend below says how to read the line styles
    (its keys are black, so no block entry can be mistaken for them). Blocks whose curves coincide stay visible: each
    block puts its markers on different layers (`markevery` offset by its index).
    """
    blocks = list(dict.fromkeys(df.block))
    every = min(4, max(1, len(blocks)))
    with paper_style():
        fig, axes = plt.subplots(1, len(metrics), figsize=(TEXTWIDTH, 2.5), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for i, block in enumerate(blocks):
                st = block_style(block, i)
                for source, ls, marker in (("measured", "-", st["marker"]), ("theory", "--", None)):
                    d = df[(df.block == block) & (df.metric == metric) & (df.source == source)].sort_values("layer")
                    if d.empty:
                        continue
                    ax.plot(d.layer, d.value, ls=ls, marker=marker, color=st["color"], markevery=(i % every, every),
                            label=st["label"] if source == "measured" else None, alpha=1.0 if source == "measured" else 0.8,
                            lw=1.3 if source == "measured" else 1.0, zorder=2 if source == "measured" else 3)
            ax.set_xlabel("layer (0 = embedding)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            if metric == "cos_mean":
                ax.set_ylim(-0.02, 1.02)
        handles: dict[str, object] = {}
        for ax in axes[0]:  # one entry per block with a measured curve in any panel
            for h, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, h)
        theory = bool((df.source == "theory").any())
        rows = -(-len(handles) // 6)
        fig.tight_layout(rect=(0, 0.06 if theory else 0, 1, 1 - 0.07 * rows))
        fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(len(handles), 6), bbox_to_anchor=(0.5, 1.0))
        if theory:  # the line-style key, apart from the blocks
            fig.legend([plt.Line2D([], [], color="k", marker="o", ms=3), plt.Line2D([], [], color="k", ls="--", lw=1.0)],
                       ["measured (solid, each block's marker)", "theory, infinite width (dashed, the block's colour)"],
                       loc="lower left", ncol=2, bbox_to_anchor=(0.0, -0.02), fontsize=6.5, handlelength=2.5)
        if note:
            scale_note(fig, note)
    return fig


def kernel_grid(kernels: dict[str, dict[int, np.ndarray]], note: str = "", layers: tuple[int, ...] | None = None,
                max_rows: int = 6):
    """Heatmaps of the token cosine kernel, one row per block and one column per layer (first / middle / last); more
    than `max_rows` blocks wrap into side-by-side groups of columns, so 16 presets stay a page-wide figure."""
    blocks = list(kernels)
    depth = max(max(k) for k in kernels.values())
    layers = layers or (0, depth // 2, depth)
    groups = -(-len(blocks) // max_rows)
    rows = -(-len(blocks) // groups)
    cols = groups * len(layers)
    cell = min(1.3, (TEXTWIDTH - 0.7) / cols)
    with paper_style():
        # constrained layout sizes the square heatmaps and the colour bar together: no empty band, no floating bar
        fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 0.7, cell * rows + 0.3), squeeze=False, layout="constrained")
        im = None
        for ax in axes.flat:
            ax.set_axis_off()
        for i, block in enumerate(blocks):
            g, r = divmod(i, rows)
            for c, layer in enumerate(layers):
                ax = axes[r][g * len(layers) + c]
                ax.set_axis_on()
                im = ax.imshow(kernels[block][layer], vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if r == 0:
                    ax.set_title(f"layer {layer}")
                if c == 0:
                    ax.set_ylabel(block_style(block, i)["label"])
        fig.colorbar(im, ax=axes, shrink=0.9, label="token cosine")
        if note:
            scale_note(fig, note)
    return fig
