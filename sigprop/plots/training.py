"""Training figures: eval loss vs step and vs wall-clock time (paper Figs. 5, 26), and probes over training
(cos_mean per layer, shaped-attention gains alpha/beta/gamma, beta_ff: paper Figs. 17-20)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sigprop.plots.style import COLUMN, TEXTWIDTH, block_style, layer_colors, paper_style, savefig, scale_note


def smooth(values: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Bias-corrected exponential moving average (how training-loss curves are usually shown)."""
    out, m = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        m = (1 - alpha) * m + alpha * v
        out[i] = m / (1 - (1 - alpha) ** (i + 1))
    return out


def _blocks(runs) -> list[tuple[str, str]]:
    """(run, block) pairs in the order the runs were given."""
    cfg = runs.configs
    return list(zip(cfg["run"], cfg["block"]))


def plot_loss_curves(runs, path: str | Path, note: str | None = None, headroom: float = 0.5) -> list[Path]:
    """Two panels: loss vs step and loss vs training time; eval loss with markers, smoothed train loss faint.
    The y axis is cut `headroom` nats above the runs' low eval losses, so the end of training stays readable."""
    m = runs.metrics
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(TEXTWIDTH, 2.5), sharey=True)
        for i, (run, block) in enumerate(_blocks(runs)):
            st = block_style(block, i)
            r = m[m["run"] == run].sort_values("step")
            if r.empty:
                continue
            ev = r.dropna(subset=["eval_loss"]) if "eval_loss" in r else r.iloc[:0]
            for ax, x in ((axes[0], "step"), (axes[1], "time")):
                xs = r[x] / (60 if x == "time" else 1)
                ax.plot(xs, smooth(r["loss"].to_numpy()), color=st["color"], alpha=0.35, lw=0.8)
                if not ev.empty:
                    ax.plot(ev[x] / (60 if x == "time" else 1), ev["eval_loss"], color=st["color"], marker=st["marker"],
                            label=st["label"], markevery=max(1, len(ev) // 8))
        axes[0].set_xlabel("training step")
        axes[1].set_xlabel("training time (minutes)")
        axes[0].set_ylabel("eval loss (nats/token)")
        top = _ylim_top(m, headroom)
        if top is not None:
            axes[0].set_ylim(top=top)
        axes[0].set_title("loss per step")
        axes[1].set_title("loss per minute of training")
        handles, labels = axes[0].get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="0.4", alpha=0.35, lw=0.8))
        labels.append("thin: train loss (smoothed)")
        fig.tight_layout()
        fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), bbox_to_anchor=(0.5, 0.98))
        if note:
            scale_note(fig, note)
        return savefig(fig, path)


def _ylim_top(m: pd.DataFrame, headroom: float = 0.5) -> float | None:
    """Cut the first steps' very high loss so the interesting range is visible."""
    if "eval_loss" not in m or m["eval_loss"].dropna().empty:
        return None
    ev = m.dropna(subset=["eval_loss"])
    return float(ev.groupby("run")["eval_loss"].quantile(0.1).max() + headroom)


PROBE_PANELS = (("probe", "cos_mean", r"cos_mean of $X_\ell$"), ("gain", "alpha", r"$\alpha_h$ (on $I$)"),
                ("gain", "beta", r"$\beta_h$ (on softmax)"), ("gain", "gamma", r"$\gamma_h$ (on $C$)"),
                ("gain", "beta_ff", r"$\beta_{FF}$"))


def plot_training_probes(runs, path: str | Path, note: str | None = None) -> list[Path]:
    """One row per block: cos_mean per layer over steps, shaped-attention gains (mean over heads) and beta_ff.

    Lines are layers (purple = first, orange = last); a panel is left out when no run records that quantity."""
    p = runs.probes
    pairs = _blocks(runs)
    panels = [pn for pn in PROBE_PANELS if ((p["source"] == pn[0]) & (p["metric"] == pn[1])).any()]
    if not panels or p.empty:
        return []
    with paper_style():
        fig, axes = plt.subplots(len(pairs), len(panels), figsize=(TEXTWIDTH, 1.35 * len(pairs) + 0.4), squeeze=False, sharex=True)
        for r, (run, block) in enumerate(pairs):
            q = p[p["run"] == run]
            for c, (source, metric, title) in enumerate(panels):
                ax = axes[r, c]
                d = q[(q["source"] == source) & (q["metric"] == metric)]
                if source == "probe":
                    d = d[d["layer"] > 0]  # layer 0 is the embedding (module "embed", or "blocks.0.hook_resid_pre" in newer runs)
                layers = sorted(d["layer"].unique())
                for layer, colour in zip(layers, layer_colors(len(layers))):
                    s = d[d["layer"] == layer].groupby("step")["value"].mean()
                    ax.plot(s.index, s.values, color=colour, lw=0.9)
                if r == 0:
                    ax.set_title(title)
                if c == 0:
                    ax.set_ylabel(block_style(block, r)["label"])
                if r == len(pairs) - 1:
                    ax.set_xlabel("step")
                if d.empty:
                    ax.text(0.5, 0.5, "fixed / n.a.", ha="center", va="center", transform=ax.transAxes, color="0.5")
        if note:
            scale_note(fig, note + "; lines = layers (purple: first, orange: last)")
        fig.tight_layout()
        return savefig(fig, path)


__all__ = ["COLUMN", "plot_loss_curves", "plot_training_probes", "smooth"]
