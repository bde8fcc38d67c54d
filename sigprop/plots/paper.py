"""The paper's figure types, drawn from `load_runs` frames in the house style (recipes call these).

- `plot_loss`: loss vs step / wall-clock for chosen runs, each with its own label, colour and line style
  (Figs. 2, 6, 8, 12, 13, 25);
- `plot_final_vs_knob`: final eval loss vs a swept knob, one curve per group, reference lines (Figs. 3, 14);
- `plot_gain_trajectories`: a gain per layer over training, mean ± std over heads (Figs. 4, 17-20);
- `plot_cos_heatmap`: token cos_mean per layer x training step, one panel per run (sigprop's own).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np
import pandas as pd

from sigprop.plots.style import COLUMN, TEXTWIDTH, block_style, layer_colors, paper_style, savefig, scale_note
from sigprop.plots.training import smooth

Y_LABELS = {"loss": "train loss (smoothed)", "eval_loss": "eval loss (nats/token)"}
X_LABELS = {"step": "training step", "time": "training time (minutes)", "tokens": "tokens seen"}


@dataclass(frozen=True)
class Line:
    """How one run is drawn: which run (the `run` column), its legend label, colour, marker and line style."""

    run: str
    label: str
    color: str
    marker: str = "o"
    ls: str = "-"

    @classmethod
    def of(cls, run: str, block: str, label: str | None = None, ls: str = "-", index: int = 0) -> Line:
        st = block_style(block, index)
        return cls(run, label or st["label"], st["color"], st["marker"], ls)


def _note(fig, text: str) -> None:
    """The scale stamp, wrapped to the figure's width (about 24 characters per inch at the stamp's size)."""
    if text:
        scale_note(fig, "\n".join(textwrap.wrap(text, width=int(fig.get_figwidth() * 24))))


def _x(frame: pd.DataFrame, x: str) -> pd.Series:
    return frame[x] / 60 if x == "time" else frame[x]


def plot_loss(metrics: pd.DataFrame, lines: list[Line], path: str | Path, note: str = "",
              panels: tuple[tuple[str, str], ...] = (("step", "eval_loss"),), zoom: float | None = None,
              titles: tuple[str, ...] | None = None, zoom_within: float | None = None,
              legend_loc: str = "upper right") -> list[Path]:
    """One panel per (x, y): x in step | time | tokens, y in loss (train, smoothed) | eval_loss (markers).
    `legend_loc`: where the first panel's legend goes (matplotlib's names), e.g. away from curves that plateau high.

    `zoom` adds a last panel with the final `zoom` fraction of steps of the first panel (paper Fig. 12); with
    `zoom_within` that panel's y-range holds the curves ending within that fraction of the best, and names the others
    (a run on a plateau would otherwise flatten the differences the zoom is for)."""
    n = len(panels) + (1 if zoom else 0)
    with paper_style():
        fig, axes = plt.subplots(1, n, figsize=(TEXTWIDTH if n > 1 else COLUMN + 0.6, 2.4), squeeze=False)
        axes = axes[0]
        specs = list(panels) + ([panels[0]] if zoom else [])
        for k, (ax, (x, y)) in enumerate(zip(axes, specs)):
            drawn = []
            for ln in lines:
                r = metrics[metrics["run"] == ln.run].sort_values("step")
                if y == "eval_loss":
                    r = r.dropna(subset=["eval_loss"]) if "eval_loss" in r else r.iloc[:0]
                if r.empty:
                    continue
                ys = smooth(r["loss"].to_numpy()) if y == "loss" else r[y].to_numpy()
                xs = _x(r, x).to_numpy()
                if zoom and k == len(specs) - 1:
                    keep = xs >= xs.max() * (1 - zoom)
                    xs, ys = xs[keep], ys[keep]
                drawn.append((xs, ys))
                ax.plot(xs, ys, color=ln.color, ls=ln.ls, label=ln.label,
                        marker=ln.marker if y == "eval_loss" else None, markevery=max(1, len(xs) // 8))
            ax.set_xlabel(X_LABELS.get(x, x))
            ax.set_ylabel(Y_LABELS.get(y, y))
            if titles and k < len(titles):
                ax.set_title(titles[k])
            elif zoom and k == len(specs) - 1:
                ax.set_title(f"last {zoom:.0%} of training")
            if not (zoom and k == len(specs) - 1):
                _cut_top(ax, drawn)
            elif zoom_within is not None:
                _zoom_to_leaders(ax, drawn, [ln.label for ln in lines], zoom_within)
        axes[0].legend(loc=legend_loc, ncol=1 if len(lines) <= 6 else 2)
        _note(fig, note)
        fig.tight_layout()
        return savefig(fig, path)


def _zoom_to_leaders(ax, drawn: list[tuple[np.ndarray, np.ndarray]], labels: list[str], within: float) -> None:
    """y-range of the curves whose last value is within `within` (a fraction) of the lowest last value; the rest are
    named, with their last value, at the panel's top."""
    ends = [float(y[np.isfinite(y)][-1]) if np.isfinite(y).any() else np.inf for _, y in drawn]
    if not drawn or not np.isfinite(min(ends)):
        return
    best = min(ends)
    near = [y[np.isfinite(y)] for (_, y), e in zip(drawn, ends) if e <= best * (1 + within)]
    off = [f"{lab} ({e:.2f})" for lab, e in zip(labels, ends) if e > best * (1 + within)]
    lo, hi = min(float(y.min()) for y in near), max(float(y.max()) for y in near)
    if hi > lo:  # headroom for the note of the curves left off
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + (0.15 if off else 0.05) * (hi - lo))
    if off:
        ax.text(0.98, 0.97, "off the chart: " + ", ".join(off), transform=ax.transAxes, ha="right", va="top", fontsize=6)


def _cut_top(ax, drawn: list[tuple[np.ndarray, np.ndarray]], after: float = 0.1) -> None:
    """Hide the first steps' very high loss: the top is the highest curve once `after` of the x-range has passed."""
    finite = [(x, y) for x, y in drawn if len(x) and np.isfinite(y).any()]
    if not finite:
        return
    lo = min(np.nanmin(y[np.isfinite(y)]) for _, y in finite)
    hi = max(np.nanmax(np.where(x >= x.max() * after, y, -np.inf)) for x, y in finite)
    if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))


def plot_final_vs_knob(table: pd.DataFrame, x: str, path: str | Path, note: str = "", group: str | None = None,
                       styles: dict[str, dict] | None = None, refs: list[tuple[str, float, str]] = (),
                       xlabel: str | None = None, ylabel: str = "final eval loss", logx: bool = False,
                       spread: pd.DataFrame | None = None) -> list[Path]:
    """Final eval loss (column `final_eval_loss`) vs knob `x`, one curve per `group` value.

    styles: group value -> {label, color, marker}; refs: horizontal lines (label, value, colour); a diverged
    run (NaN loss) is drawn as a cross at the top of the axes. spread (columns group, x, mean, std): seed means
    with ± std error bars, drawn beside the curves (which show one seed)."""
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN + 0.6, 2.5))
        groups = [None] if group is None else list(dict.fromkeys(table[group]))
        finite = table.final_eval_loss.astype(float)
        top = float(np.nanmax(list(finite) + [v for _, v, _ in refs])) if np.isfinite(finite).any() or refs else 1.0
        for i, g in enumerate(groups):
            d = table if g is None else table[table[group] == g]
            d = d.sort_values(x)
            st = (styles or {}).get(g, block_style(str(g), i) if g is not None else {"label": None, "color": "0.2", "marker": "o"})
            yv = d.final_eval_loss.astype(float).to_numpy()
            ax.plot(d[x], yv, color=st["color"], marker=st["marker"], label=st["label"])
            bad = ~np.isfinite(yv)
            if bad.any():
                ax.scatter(d[x].to_numpy()[bad], np.full(bad.sum(), top), marker="x", color=st["color"], zorder=5)
        if spread is not None:
            for i, g in enumerate(groups):
                d = spread[spread.group == g]
                st = (styles or {}).get(g, block_style(str(g), i))
                ax.errorbar(d[x], d["mean"], yerr=d["std"], color=st["color"], marker=st["marker"], mfc="none", ls="none",
                            capsize=2, ms=6)
        drawn_refs = [(lab, v, c) for lab, v, c in refs if v is not None and math.isfinite(v)]
        for k, (label, value, color) in enumerate(drawn_refs):
            ax.axhline(value, color=color, ls=REF_STYLES[k % len(REF_STYLES)], lw=1.0, label=f"{label} ({value:.3f})")
        if logx:
            ax.set_xscale("log")
            xs = sorted(set(table[x].astype(float)))
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        _label_refs(ax, drawn_refs, [(d[x].astype(float).to_numpy(), d.final_eval_loss.astype(float).to_numpy())
                                     for _, d in (table.groupby(group) if group else [(None, table)])])
        _note(fig, note)
        fig.tight_layout()
        return savefig(fig, path)


#: line styles of reference lines, in order: two references at the same value still show as two patterns
REF_STYLES = ("--", ":", "-.")


def _label_refs(ax, refs: list[tuple[str, float, str]], curves: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Name each reference line on the axes, at the x where the curves are farthest from the lines: the highest
    reference's label above its line, the others' below theirs, so two lines at nearly the same value get two
    readable labels."""
    if not refs:
        return
    lo, hi = ax.get_xlim()
    log = ax.get_xscale() == "log"
    u0, u1 = (np.log10(lo), np.log10(hi)) if log else (lo, hi)
    half = 0.15 * (u1 - u0)  # about half a label's width
    centres = np.linspace(u0 + half, u1 - half, 15)

    def room(c: float) -> float:
        """The curves' smallest distance to any reference over the label's span."""
        span = np.linspace(c - half, c + half, 15)
        span = 10 ** span if log else span
        gaps = [np.abs(np.interp(span, cx[ok][np.argsort(cx[ok])], cy[ok][np.argsort(cx[ok])]) - v).min()
                for cx, cy in curves if (ok := np.isfinite(cx) & np.isfinite(cy)).sum() >= 2 for _, v, _ in refs]
        return min(gaps, default=0.0)

    best = max(centres, key=room)
    x = 10 ** best if log else best
    order = sorted(refs, key=lambda r: -r[1])
    for k, (label, value, color) in enumerate(order):
        ax.annotate(f"{label} {value:.3f}", (x, value), xytext=(0, 2 if k == 0 else -2), textcoords="offset points",
                    ha="center", va="bottom" if k == 0 else "top", fontsize=6.5, color=color,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.8})


def gain_frame(probes: pd.DataFrame, run: str, metric: str) -> pd.DataFrame:
    """Per (layer, step): mean and std over heads of one gain of one run (std 0 for a per-block gain)."""
    d = probes[(probes["run"] == run) & (probes["source"] == "gain") & (probes["metric"] == metric)]
    return d.groupby(["layer", "step"])["value"].agg(mean="mean", std=lambda v: float(np.std(v))).reset_index()


def plot_gain_trajectories(probes: pd.DataFrame, run: str, metrics: list[tuple[str, str]], path: str | Path,
                           note: str = "", ref: dict[str, float] | None = None) -> list[Path]:
    """One panel per (metric, title): the gain per layer against training step, mean ± std over heads
    (shaded) as in paper Figs. 17-19; colour runs from the first (purple) to the last (orange) layer.
    `ref` draws a dotted horizontal line per metric (e.g. the 0.05 threshold of Fig. 4)."""
    panels = [(m, t) for m, t in metrics if not gain_frame(probes, run, m).empty]
    if not panels:
        return []
    with paper_style():
        fig, axes = plt.subplots(1, len(panels), figsize=(min(TEXTWIDTH, 2.3 * len(panels) + 0.6), 2.3), squeeze=False)
        shaded = False
        for ax, (metric, title) in zip(axes[0], panels):
            g = gain_frame(probes, run, metric)
            layers = sorted(g.layer.unique())
            for layer, c in zip(layers, layer_colors(len(layers))):
                d = g[g.layer == layer].sort_values("step")
                ax.plot(d.step, d["mean"], color=c, lw=1.0, label=f"layer {layer}")
                if (d["std"] > 0).any():
                    shaded = True
                    ax.fill_between(d.step, d["mean"] - d["std"], d["mean"] + d["std"], color=c, alpha=0.15, lw=0)
            if ref and metric in ref:
                ax.axhline(ref[metric], color="0.3", ls=":", lw=0.8)
            ax.set_title(title)
            ax.set_xlabel("training step")
        axes[0][0].legend(loc="best", ncol=1 if len(layers) <= 6 else 2, fontsize=6)
        _note(fig, note + ("; shaded: ± std over heads" if shaded else ""))
        fig.tight_layout()
        return savefig(fig, path)


def plot_cos_heatmap(probes: pd.DataFrame, lines: list[Line], path: str | Path, note: str = "",
                     sources: list[str] | None = None) -> list[Path]:
    """One heatmap per run: mean token cosine (cos_mean) for every layer (rows, 0 = embedding) at every
    probed training step (columns). Bright = tokens aligned (rank collapse). sources: per panel, which probe
    rows it shows ('probe': the residual stream; 'mlp_out' / 'attn_out': a block's branch output)."""
    with paper_style():
        fig, axes = plt.subplots(1, len(lines), figsize=(min(TEXTWIDTH, 2.2 * len(lines) + 0.8), 2.4), squeeze=False,
                                 sharey=True, layout="constrained")
        im = None
        for ax, ln, src in zip(axes[0], lines, sources or ["probe"] * len(lines)):
            d = probes[(probes["run"] == ln.run) & (probes["source"] == src) & (probes["metric"] == "cos_mean")]
            grid = d.pivot_table(index="layer", columns="step", values="value", aggfunc="mean").sort_index()
            if grid.empty:
                ax.text(0.5, 0.5, "no probes", ha="center", va="center", transform=ax.transAxes)
                continue
            steps = grid.columns.to_numpy()
            im = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma",
                           interpolation="nearest", extent=(steps.min(), steps.max(), grid.index.min() - 0.5, grid.index.max() + 0.5))
            ax.set_title(ln.label)
            ax.set_xlabel("training step")
            ax.set_yticks(grid.index.to_numpy()[:: -(-len(grid) // 10)])  # at most ~10 labelled layers
            ax.grid(False)
        axes[0][0].set_ylabel("layer (0 = embedding)" if not sources or sources[0] == "probe" else "block")
        if im is not None:
            fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label="cos_mean (token alignment)")
        _note(fig, note)
        return savefig(fig, path)


__all__ = ["Line", "gain_frame", "plot_cos_heatmap", "plot_final_vs_knob", "plot_gain_trajectories", "plot_loss"]
