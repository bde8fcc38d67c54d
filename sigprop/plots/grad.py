"""Backward signal propagation figures: depth profiles of gradient norms per block (measured solid, theory dashed)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from sigprop.plots.style import TEXTWIDTH, block_style, paper_style, scale_note


def _series(df: pd.DataFrame, block: str, metric: str, source: str = "measured") -> pd.Series:
    d = df[(df.block == block) & (df.metric == metric) & (df.source == source)]
    return d.groupby("layer")["value"].mean()


def grad_profile(df: pd.DataFrame, note: str = ""):
    """Three panels per block: ||dL/dX_l|| per token; ||dL/dW^Q|| / ||dL/dW^V|| (or / ||dL/dW_MLP|| where W^V is
    the identity); ||dL/dW^K|| likewise. Rank collapse starves queries and keys: their curves fall with depth."""
    with paper_style():
        fig, axes = plt.subplots(1, 3, figsize=(TEXTWIDTH, 2.4))
        against_mlp = False
        for i, block in enumerate(dict.fromkeys(df.block)):
            st = block_style(block, i)
            g = _series(df, block, "grad_norm")
            axes[0].plot(g.index, g.values, marker=st["marker"], color=st["color"], label=st["label"])
            th = _series(df, block, "grad_norm", "theory")
            if len(th):
                axes[0].plot(th.index, th.values, ls="--", color=st["color"], alpha=0.8)
            v = _series(df, block, "grad_W_V")
            ref, ref_name = (v, "V") if len(v) > 1 else (_series(df, block, "grad_mlp"), "MLP")
            against_mlp |= ref_name == "MLP"
            for ax, w in ((axes[1], "grad_W_Q"), (axes[2], "grad_W_K")):
                r = (_series(df, block, w) / ref).dropna()
                r = r[r > 0]
                if len(r):
                    ax.plot(r.index, r.values, marker=st["marker"], color=st["color"], ls="-" if ref_name == "V" else ":")
        axes[0].set_ylabel(r"$\|\partial L/\partial x_t\|$ (mean over tokens)")
        axes[1].set_ylabel(r"$\|\nabla W^Q\| \,/\, \|\nabla W^V\|$")
        axes[2].set_ylabel(r"$\|\nabla W^K\| \,/\, \|\nabla W^V\|$")
        for ax in axes:
            ax.set_yscale("log")
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = axes[0].get_legend_handles_labels()
        if (df.source == "theory").any() and (df[df.source == "theory"].metric == "grad_norm").any():
            handles.append(plt.Line2D([], [], color="0.3", ls="--"))
            labels.append(r"theory ($W^Q = 0$, infinite width)")
        if against_mlp:
            handles.append(plt.Line2D([], [], color="0.3", ls=":"))
            labels.append(r"ratio to the MLP (no $W^V$)")
        fig.tight_layout(rect=(0, 0, 1, 0.86))
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), bbox_to_anchor=(0.5, 1.0))
        if note:
            scale_note(fig, note)
    return fig
