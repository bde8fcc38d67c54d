"""Phase-diagram figures: theory heatmaps over two knobs, measured points in the same colours, the paper starred."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize

from sigprop.blocks.spec import BETA_FF_REF, BETA_FF_REF_DEPTH
from sigprop.plots.signal import METRIC_LABELS
from sigprop.plots.style import TEXTWIDTH, paper_style, scale_note
from sigprop.probes.metrics import COLLAPSE_COS

AXIS_LABELS = {"beta_ff": r"MLP-branch gain $\beta_{FF}$", "depth": "depth L", "alpha_sa": r"skip gain $\alpha_{SA}$",
               "beta_sa": r"attention-branch gain $\beta_{SA}$", "alpha": r"shaped $\alpha$ (weight on $I$)",
               "gamma": r"shaped $\gamma$ (weight on $C$)", "query_init": r"query scale $\sigma_Q$ (std of $W^Q$)",
               "seq_len": "context length T"}
CMAPS = {"cos_mean": "magma", "eff_rank": "viridis", "attn_entropy_ratio": "cividis"}
UNIT = ("cos_mean", "attn_entropy_ratio")  # metrics in [0, 1]: one fixed colour scale


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around grid values (geometric midpoints on a log axis)."""
    v = np.log(values) if log else values.astype(float)
    mid = (v[1:] + v[:-1]) / 2
    e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return np.exp(e) if log else e


def phase_figure(p):
    """One panel per metric: theory heatmap (final layer), rank-collapse contour, measured circles, paper star."""
    d = p.diagram
    metrics = list(dict.fromkeys(p.grid.metric))
    log_y = d.y == "depth"
    with paper_style():
        fig, axes = plt.subplots(1, len(metrics), figsize=(TEXTWIDTH, 2.7), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            g = p.grid[p.grid.metric == m].pivot_table(index="y", columns="x", values="value")
            xs, ys, Z = g.columns.to_numpy(float), g.index.to_numpy(float), g.to_numpy()
            norm = Normalize(0, 1) if m in UNIT else Normalize(np.nanmin(Z), np.nanmax(Z))
            mesh = ax.pcolormesh(_edges(xs, d.log_x), _edges(ys, log_y), Z, cmap=CMAPS.get(m, "viridis"), norm=norm,
                                 shading="flat", rasterized=True)
            fig.colorbar(mesh, ax=ax, label=f"final-layer {METRIC_LABELS.get(m, m)}", shrink=0.9)
            cos = p.grid[p.grid.metric == "cos_mean"].pivot_table(index="y", columns="x", values="value").to_numpy()
            if np.nanmin(cos) < COLLAPSE_COS < np.nanmax(cos):
                cs = ax.contour(xs, ys, cos, levels=[COLLAPSE_COS], colors="w", linewidths=0.9, linestyles="--")
                ax.clabel(cs, fmt={COLLAPSE_COS: f"cos={COLLAPSE_COS}"}, fontsize=5.5)
            pts = p.points[p.points.metric == m]
            if len(pts):
                ax.scatter(pts.x, pts.y, c=pts.measured, cmap=CMAPS.get(m, "viridis"), norm=norm, s=28, edgecolors=
                           np.where(pts.ok, "w", "r"), linewidths=1.0, zorder=3, label="measured (same colour scale)")
            ax.plot(*d.paper, marker="*", ms=10, mfc="none", mec="cyan", mew=1.1, ls="none", zorder=4, label=d.paper_label)
            if d.x == "beta_ff" and d.y == "depth":
                L = np.geomspace(max(ys.min(), 1), ys.max(), 50)
                ax.plot(BETA_FF_REF * np.sqrt(BETA_FF_REF_DEPTH / L), L, color="cyan", lw=0.9, ls=":",
                        label=r"paper's rule $\beta_{FF}=0.1\sqrt{18/L}$")
            if d.log_x:
                ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
                ax.set_yticks([t for t in (1, 2, 4, 9, 18, 36, 72) if ys.min() <= t <= ys.max()])
                ax.set_yticklabels([str(t) for t in (1, 2, 4, 9, 18, 36, 72) if ys.min() <= t <= ys.max()])
            ax.set_xlim(_edges(xs, d.log_x)[[0, -1]])
            ax.set_ylim(_edges(ys, log_y)[[0, -1]])
            ax.grid(False)
            ax.set_xlabel(AXIS_LABELS.get(d.x, d.x))
            ax.set_ylabel(AXIS_LABELS.get(d.y, d.y))
        fig.suptitle(d.title, y=1.04)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 0.99), fontsize=6)
        ok = int(p.points[p.points.metric == "cos_mean"].ok.sum()) if len(p.points) else 0
        n = int((p.points.metric == "cos_mean").sum()) if len(p.points) else 0
        scale_note(fig, p.scale_text() + f" · {ok}/{n} points within it (red edge: outside)")
    return fig
