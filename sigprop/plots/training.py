"""Training figures: eval loss vs step and vs wall-clock time (paper Figs. 5, 26), and probes over training
(cos_mean per layer, shaped-attention gains alpha/beta/gamma, beta_ff: paper Figs. 17-20)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sigprop.runs import ENV, read_json
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


def machine_of(env: dict) -> str:
    """Where a run's clock ran, from its env.json: 'AMD EPYC (bf16), 1 thread' or the accelerator's name. Runs
    compare in time only on the same machine: the gallery's runs come from CPUs up to ~2.5x apart."""
    if env.get("device", "cpu") != "cpu":
        return str(env.get("device_name") or env.get("device"))
    name = " ".join(w for w in str(env.get("device_name", "?")).replace("(R)", "").split() if w != "Processor")
    n = env.get("threads")
    return name + (" (bf16)" if env.get("cpu_bf16") else "") + (f", {n} thread{'s' * (n != 1)}" if n else "")


def machines(runs) -> dict[str, str]:
    """run -> `machine_of` its env.json, for the runs whose folder is known and holds one."""
    return {run: machine_of(read_json(path / ENV)) for run, path in (getattr(runs, "paths", None) or {}).items()
            if (path / ENV).is_file()}


def plot_loss_curves(runs, path: str | Path, note: str | None = None, headroom: float = 0.5,
                     labels: dict[str, str] | None = None) -> list[Path]:
    """Two panels: loss vs step and loss vs training time; eval loss with markers, smoothed train loss faint.

    The legend has one entry per drawn eval curve; a run whose summary says 'diverged' is labelled so, with an x
    where it stopped. The time panel draws only the runs timed on the first run's machine (`machines`), and
    names the ones it leaves out: clocks from different CPUs do not compare. `labels`: run -> legend label.
    The y axis is cut `headroom` nats above the drawn runs' low eval losses, so the end of training stays readable."""
    m, pairs = runs.metrics, _blocks(runs)
    summ = runs.summaries.set_index("run") if len(runs.summaries) else pd.DataFrame()
    where = machines(runs)
    ref = next((where[r] for r, _ in pairs if r in where), None)
    off_clock = [(r, b) for r, b in pairs if ref is not None and where.get(r, ref) != ref]
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(TEXTWIDTH, 2.5), sharey=True)
        names, kept = {}, []
        for i, (run, block) in enumerate(pairs):
            st = block_style(block, i)
            r = m[m["run"] == run].sort_values("step")
            if r.empty:
                continue
            label = (labels or {}).get(run, st["label"])
            diverged = "status" in summ and run in summ.index and summ.at[run, "status"] == "diverged"
            if diverged:
                label += f" (diverged, step {int(summ.at[run, 'step'])})"
            else:
                kept.append(run)
            names[run] = label
            ev = r.dropna(subset=["eval_loss"]) if "eval_loss" in r else r.iloc[:0]
            for ax, x in ((axes[0], "step"), (axes[1], "time")):
                if x == "time" and (run, block) in off_clock:
                    continue
                xs = r[x] / (60 if x == "time" else 1)
                ax.plot(xs, smooth(r["loss"].to_numpy()), color=st["color"], alpha=0.35, lw=0.8)
                if not ev.empty:
                    ex = ev[x] / (60 if x == "time" else 1)
                    ax.plot(ex, ev["eval_loss"], color=st["color"], marker=st["marker"], label=label,
                            markevery=max(1, len(ev) // 8))
                    if diverged:
                        ax.plot(ex.iloc[-1:], ev["eval_loss"].iloc[-1:], color=st["color"], marker="x", ms=7, mew=1.5, ls="none")
        axes[0].set_xlabel("training step")
        axes[1].set_xlabel("training time (minutes)")
        axes[0].set_ylabel("eval loss (nats/token)")
        top = _ylim_top(m[m["run"].isin(kept or list(names))], headroom)
        if top is not None:
            axes[0].set_ylim(top=top)
        axes[0].set_title("loss per step")
        axes[1].set_title("loss per minute of training" + (f"\ntimed on {ref} only" if off_clock else ""))
        if off_clock:
            left = ", ".join(names.get(r, block_style(b)["label"]) for r, b in off_clock)
            cpus = ", ".join(dict.fromkeys(where[r] for r, _ in off_clock))
            axes[1].text(0.98, 0.97, f"not drawn here, timed on\n{cpus}:\n{left}", transform=axes[1].transAxes,
                         ha="right", va="top", fontsize=6, color="0.3")
        handles, legend = axes[0].get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="0.4", alpha=0.35, lw=0.8))
        legend.append("thin: train loss (smoothed)")
        fig.tight_layout()
        one_row = sum(len(t) + 6 for t in legend) <= 150  # characters that fit across the text width at 7 pt
        fig.legend(handles, legend, loc="lower center", ncol=len(legend) if one_row else -(-len(legend) // 2),
                   bbox_to_anchor=(0.5, 0.98))
        if note:  # wrapped to the figure's width (about 24 characters per inch at the stamp's size)
            scale_note(fig, "\n".join(textwrap.wrap(note, width=int(fig.get_figwidth() * 24))))
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


__all__ = ["COLUMN", "machine_of", "machines", "plot_loss_curves", "plot_training_probes", "smooth"]
