"""One house style for every sigprop figure: serif fonts, paper widths, one colour/marker per block."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt

#: Paper names, colours and markers, used consistently in every figure. Every preset of `sigprop.blocks` has its own
#: colour and its own marker (tests/test_figure_honesty.py): no grey (grey is theory and reference lines), no two
#: colours closer than ΔE 20 (CIELAB), none closer than ΔE 4 under simulated deuteranopia or protanopia, and a distinct
#: marker, so that no reader has to tell blocks apart by colour alone. The paper's blocks keep their long-standing
#: (tab10) colours, whose red/green and blue/purple pairs are close for colour-blind readers: their markers differ.
#: The blocks added since (Post-LN's old cyan was E-SPA's) take tones that differ from those in lightness too.
BLOCK_STYLE: dict[str, dict[str, str]] = {
    "pre-ln": {"label": "Pre-LN", "color": "#1f77b4", "marker": "o"},
    "post-ln": {"label": "Post-LN", "color": "#000080", "marker": "v"},
    "parallel": {"label": "Parallel", "color": "#ff7f0e", "marker": "s"},
    "skipless": {"label": "Naive skipless", "color": "#8c564b", "marker": "x"},
    "v-skipinit": {"label": "V-SkipInit", "color": "#d62728", "marker": "^"},
    "sas": {"label": "SAS", "color": "#2ca02c", "marker": "D"},
    "sas-p": {"label": "SAS-P", "color": "#9467bd", "marker": "P"},
    "sas-p-nonorm": {"label": "SAS-P no norm", "color": "#e377c2", "marker": "*"},
    "u-spa": {"label": "U-SPA", "color": "#bcbd22", "marker": "<"},
    "e-spa": {"label": "E-SPA", "color": "#17becf", "marker": ">"},
    "op": {"label": "OP", "color": "#bd9e39", "marker": "h"},
    "dyt": {"label": "DyT", "color": "#882255", "marker": "d"},
    "derf": {"label": "Derf", "color": "#1b9e77", "marker": "p"},
    "peri-ln": {"label": "Peri-LN", "color": "#800000", "marker": "H"},
    "gated": {"label": "Gated attn.", "color": "#008080", "marker": "X"},
    "ngpt": {"label": "nGPT", "color": "#d6616b", "marker": "8"},
    # named variants the successors recipe draws (not presets)
    "value-residual": {"label": "Value residual", "color": "#6b6ecf", "marker": "+"},
    "dyt-rmsfinal": {"label": "DyT, RMSNorm head", "color": "#c49c94", "marker": "1"},
}
#: colours of blocks that are not presets (custom specs), none of them a preset's
_EXTRA_COLORS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]

#: Figure widths in inches: one column and full text width of a conference paper.
COLUMN, TEXTWIDTH = 3.4, 6.9

RC = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif", "Times New Roman", "Times"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
}


def block_style(name: str, index: int = 0) -> dict[str, str]:
    """Label, colour and marker for a block (presets get their paper name; others a stable colour)."""
    if name in BLOCK_STYLE:
        return dict(BLOCK_STYLE[name])
    return {"label": name, "color": _EXTRA_COLORS[index % len(_EXTRA_COLORS)], "marker": "o"}


def layer_colors(n: int) -> list[tuple]:
    """One colour per layer, first to last: plasma from dark purple to orange, stopping before its pale
    yellow end so the last layer stays visible on white."""
    cmap = plt.get_cmap("plasma")
    return [cmap(0.8 * j / max(1, n - 1)) for j in range(n)]


@contextmanager
def paper_style():
    """Temporarily apply the house rcParams."""
    with plt.rc_context(RC):
        yield


def scale_note(fig, text: str) -> None:
    """Stamp the scale (model size, steps, data) at the bottom of a figure."""
    fig.text(0.99, -0.01, text, ha="right", va="top", fontsize=6, color="0.35", style="italic")


def savefig(fig, path: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write `path` with each format's suffix; returns the written paths."""
    stem = Path(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem = stem.with_suffix("") if stem.suffix in (".png", ".pdf", ".svg") else stem
    out = []
    with paper_style():  # savefig.* settings (tight bbox, dpi) apply at save time
        for fmt in formats:
            p = stem.with_name(stem.name + f".{fmt}")
            # no creation date in the file: a figure redrawn from the same records is byte-identical (no git churn)
            fig.savefig(p, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
            out.append(p)
    plt.close(fig)
    return out
