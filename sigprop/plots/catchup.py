"""The catch-up study's figures: per-step gap to Pre-LN against tokens (log x), and final loss against peak LR.

Both take tidy frames (one row per point) so the recipe's numbers and the figure come from the same table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
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


#: the y label of every gap panel: which side of 0 is ahead
GAP_LABEL = "eval-loss gap to Pre-LN (%)\nbelow 0: ahead of Pre-LN"


def plot_gap_vs_tokens(curves: pd.DataFrame, path: str | Path, note: str = "", floor: float = 1.0,
                       reach: dict | None = None, lrs: dict | None = None, titles: dict | None = None,
                       cap: float = 40.0, diverged: dict | None = None) -> list[Path]:
    """curves: size, block, tokens, mean, std, n (gap to Pre-LN in % per eval). One panel per size; each block
    a line with its marker and its ± std band over seeds (shaded in its colour); the hatched band is ±`floor` %
    (the smallest gap that counts as a match). Blocks drawn earlier get wider lines underneath, so a curve that
    coincides with a later one still shows. `reach[(size, block)]` = tokens from which the gap stays at or below
    its band (a dashed vertical line); `lrs[(size, block)]` = the peak LR each block ran at (a number, or a phrase
    such as 'lr rising to 6e-4'), written with the seed counts under the panel's title; `titles[size]` replaces a
    panel's first title line ('<size> (depth x width)'); `cap` is the highest y drawn (%); `diverged[(size, block)]`
    = the step where that block's run diverged: an x at its curve's last point, and the legend says so."""
    sizes = list(dict.fromkeys(curves["size"]))
    with paper_style():
        fig, axes = _panels(max(1, len(sizes)), height=2.6)
        handles: dict[str, object] = {}
        for ax, size in zip(axes, sizes):
            d = curves[curves["size"] == size]
            band = ax.axhspan(-floor, floor, facecolor="none", edgecolor="0.6", hatch="////", lw=0, zorder=0)
            handles.setdefault(f"±{floor:g}% (match floor)", band)
            ax.axhline(0, color="0.3", lw=0.6, ls=":")
            seeds = {}
            blocks = list(dict.fromkeys(d.block))
            for k, (block, g) in enumerate(d.groupby("block", sort=False)):
                st = block_style(block)
                g = g.sort_values("tokens")
                seeds[st["label"]] = n = int(g["n"].max())
                ax.plot(g["tokens"], g["mean"], color=st["color"], marker=st["marker"], ms=3.5,
                        markevery=(0.04 * k, 0.12), lw=1.2 + 0.7 * (len(blocks) - 1 - k), zorder=2 + k)
                handles.setdefault(st["label"], Line2D([], [], color=st["color"], marker=st["marker"], ms=3.5, lw=1.3))
                if n >= 2:
                    ax.fill_between(g["tokens"], g["mean"] - g["std"], g["mean"] + g["std"], color=st["color"], alpha=0.2, lw=0)
                step = (diverged or {}).get((size, block))
                if step is not None and len(g):
                    x = ax.plot(g["tokens"].iloc[-1:], g["mean"].iloc[-1:], color=st["color"], marker="X", ms=8, mec="k",
                                mew=0.5, ls="none", zorder=10)[0]
                    handles[f"{st['label']} diverged (step {step:,})"] = x
                x = (reach or {}).get((size, block))
                if x is not None:
                    ax.axvline(x, color=st["color"], lw=0.8, ls="--")
            _log_tokens(ax)
            head = (titles or {}).get(size, f"{size} (depth x width)")
            ax.set_title(f"{head}\n{_panel_note(size, d, seeds, lrs or {})}", fontsize=7)
            ax.set_xlabel("tokens seen")
            top = float(np.nanmax(d["mean"] + d["std"].fillna(0))) if len(d) else 10.0
            low = float(np.nanmin(d["mean"] - d["std"].fillna(0))) if len(d) else -2.0
            ax.set_ylim(min(-2 * floor, low - 0.5), max(3 * floor, min(1.05 * top, cap)))
        axes[0].set_ylabel(GAP_LABEL)
        if (curves["n"] >= 2).any():
            handles["shaded: ± 1 std over seeds"] = Patch(facecolor="0.45", alpha=0.3, lw=0)
        if reach:
            handles["caught up: inside the band from here on"] = Line2D([], [], color="0.4", lw=0.8, ls="--")
        rows = 1 if sum(len(t) + 6 for t in handles) <= 22 * fig.get_figwidth() else 2
        fig.tight_layout(rect=(0, 0.06 + 0.06 * rows, 1, 1))
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=-(-len(handles) // rows), frameon=False,
                   bbox_to_anchor=(0.5, 0.03 * (2 - rows)))
        _note(fig, note)
    return savefig(fig, path)


def _lr(v: float | str) -> str:
    return f"lr {v:g}" if isinstance(v, (int, float)) else str(v)


def _panel_note(size: str, d: pd.DataFrame, seeds: dict[str, int], lrs: dict) -> str:
    """'all at lr 4e-3, 3 seeds' when every block shares both; else each block's LR and seeds, Pre-LN's LR first."""
    blocks = ["pre-ln", *dict.fromkeys(d.block)]
    lr = {b: lrs.get((size, b)) for b in blocks}
    if len(set(lr.values())) == 1 and None not in lr.values() and len(set(seeds.values())) == 1:
        n = next(iter(seeds.values()))
        return f"all at {_lr(lr['pre-ln'])}, {n} seed{'s' * (n != 1)}"
    parts = [f"Pre-LN {_lr(lr['pre-ln'])}" if lr["pre-ln"] is not None else "Pre-LN"]
    for b in blocks[1:]:
        label, n = block_style(b)["label"], seeds.get(block_style(b)["label"], 0)
        parts.append(f"{label}" + (f" {_lr(lr[b]).removeprefix('lr ')}" if lr[b] is not None else "") + f" ({n} seed{'s' * (n != 1)})")
    return ", ".join(parts)


def plot_loss_vs_lr(grid: pd.DataFrame, path: str | Path, note: str = "", diverged: pd.DataFrame | None = None,
                    first_seed: int = 0) -> list[Path]:
    """grid: size, block, lr, mean, std, n, losses (final eval loss by seed). One panel per size, one curve per
    block over the peak-LR grid at `first_seed` (which picks the best LR, filled), and mean ± std bars where an LR
    has more seeds (beside it). `diverged` (size, block, lr, step): runs that diverged, an x at the panel's top."""
    sizes = list(dict.fromkeys(grid["size"]))
    with paper_style():
        fig, axes = _panels(max(1, len(sizes)))
        for ax, size in zip(axes, sizes):
            d = grid[grid["size"] == size]
            for block, g in d.groupby("block", sort=False):
                st = block_style(block)
                g = g.sort_values("lr")
                y = g["losses"].map(lambda x: x.get(first_seed, np.nan))
                ax.plot(g["lr"], y, color=st["color"], marker=st["marker"], mfc="white", label=st["label"])
                seeded = g[g["n"] >= 2]  # the seeds' mean ± std, beside the first-seed grid that picks the LR
                ax.errorbar(seeded["lr"] * 1.04, seeded["mean"], yerr=seeded["std"], color=st["color"], marker="_",
                            ls="none", capsize=2, lw=0.8)
                if y.notna().any():
                    i = y.idxmin()
                    ax.plot([g.at[i, "lr"]], [y[i]], marker=st["marker"], color=st["color"], mfc=st["color"], ls="none", zorder=4)
            gone = diverged[diverged["size"] == size] if diverged is not None else pd.DataFrame()
            for r in gone.itertuples():
                st = block_style(r.block)
                ax.plot([r.lr], [1.0], transform=ax.get_xaxis_transform(), marker="x", color=st["color"], ls="none", clip_on=False)
                ax.annotate(f"diverged (step {int(r.step)})", (r.lr, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(-4, -10), textcoords="offset points", ha="right", fontsize=6, color=st["color"])
            ax.set_xscale("log")
            lrs = sorted(set(d["lr"]) | set(gone["lr"] if len(gone) else []))
            ax.set_xticks(lrs, [f"{x:g}" for x in lrs])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("peak learning rate")
            ax.set_title(f"{size} (depth x width)")
        axes[0].set_ylabel("final eval loss")
        handles: dict[str, object] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.tight_layout(rect=(0, 0.17, 1, 1))
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles) + 1, frameon=False,
                   bbox_to_anchor=(0.5, 0.04), title=f"line: seed {first_seed} (filled: its best LR); bar: mean ± std over seeds",
                   title_fontsize=6)
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
