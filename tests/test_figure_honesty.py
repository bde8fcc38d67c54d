"""Figures that say what their data says (issue 26 item 7): legends equal the curves drawn, a diverged run is never
drawn as a block's best, stamps and titles derive from the drawn runs, and every block has its own colour and marker.

The gallery checks redraw committed figures from their committed records (`--replot`, no training) and read the
drawn matplotlib figure, captured on its way to `savefig`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from sigprop.recipes import reproduce  # noqa: E402

GALLERY = Path(__file__).resolve().parents[1] / "figures"

# ------------------------------------------------------------------------------------------------
# Colours: CIELAB distance, with deuteranopia and protanopia simulated (Machado et al. 2009, severity 1)
# ------------------------------------------------------------------------------------------------

CVD = {"normal": np.eye(3),
       "deutan": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]),
       "protan": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]])}


def _lab(colour: str, vision: str) -> np.ndarray:
    c = np.asarray(to_rgb(colour))
    linear = CVD[vision] @ np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(linear, 0, 1)
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a: str, b: str, vision: str = "normal") -> float:
    return float(np.linalg.norm(_lab(a, vision) - _lab(b, vision)))


def test_every_preset_has_its_own_colour_and_marker():
    """e-spa and post-ln shared #17becf; now no two presets are closer than ΔE 20, none coincides for a deuteranope
    or protanope (ΔE >= 4), and every preset has its own marker, so colour is never the only cue."""
    from sigprop.blocks import preset_names
    from sigprop.plots.style import BLOCK_STYLE, block_style

    names = preset_names()
    assert set(names) <= set(BLOCK_STYLE)  # no preset falls back to a custom colour
    styles = {n: block_style(n) for n in names}
    assert len({s["color"].lower() for s in styles.values()}) == len(names)
    assert len({s["marker"] for s in styles.values()}) == len(names)
    assert len({s["label"] for s in styles.values()}) == len(names)
    for a, b in itertools.combinations(names, 2):
        ca, cb = styles[a]["color"], styles[b]["color"]
        assert delta_e(ca, cb) >= 20, (a, b)
        assert min(delta_e(ca, cb, "deutan"), delta_e(ca, cb, "protan")) >= 4, (a, b)


# ------------------------------------------------------------------------------------------------
# Capturing the figures a recipe draws
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch) -> dict[str, plt.Figure]:
    """stem -> the figure each `savefig` call received (still written, so the recipe runs as usual)."""
    import sigprop.plots.catchup as catchup
    import sigprop.plots.paper as paper
    import sigprop.plots.style as style
    import sigprop.plots.training as training

    figs: dict[str, plt.Figure] = {}
    real = style.savefig

    def keep(fig, path, formats=("png", "pdf")):
        figs[Path(path).name] = fig
        return real(fig, path, formats)

    for module in (style, paper, catchup, training):
        monkeypatch.setattr(module, "savefig", keep)
    return figs


def replot(name: str, out: Path, monkeypatch, scale: str = "cpu"):
    import sigprop.recipes.executor as executor

    monkeypatch.setattr(executor, "ensure_run", lambda *a, **k: pytest.fail("--replot must not train"))
    return reproduce(name, scale, out, runs_dir=GALLERY / name / "runs", quiet=True, replot=True)


def legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def stamp(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def renderer(fig):
    """A drawn Agg canvas for a figure (savefig closed it), to measure where its texts landed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


# ------------------------------------------------------------------------------------------------
# fig5: no diverged run as "best LR", the time panel on one machine
# ------------------------------------------------------------------------------------------------


def test_fig5_draws_no_diverged_run_and_times_only_runs_of_one_cpu(tmp_path, monkeypatch, drawn):
    res = replot("fig5", tmp_path, monkeypatch)
    fig = drawn["fig5_fig26"]
    step, time = fig.axes[:2]
    labelled = [ln for ln in step.get_lines() if not ln.get_label().startswith("_")]
    legend = legend_texts(fig.legends[0])
    assert legend[:-1] == [ln.get_label() for ln in labelled]  # one entry per eval curve, plus the train-loss key
    assert "SAS-P no norm, lr 0.002" in legend and not any("diverged" in t for t in legend)
    text = stamp(fig)
    assert "SAS-P no norm diverged at lr 0.004 (seed 0)" in text and "lr 0.004, SAS-P no norm 0.002" in text
    timed = {ln.get_label() for ln in time.get_lines() if not ln.get_label().startswith("_")}
    assert timed == {"Pre-LN", "V-SkipInit", "SAS", "SAS-P"}  # the AMD EPYC runs; Parallel and no-norm ran on a Xeon
    assert "timed on AMD EPYC" in time.get_title()
    assert any("Parallel" in t.get_text() and "Intel Xeon" in t.get_text() for t in time.texts)
    assert res.reused and not res.trained


def test_a_diverged_run_is_labelled_diverged_and_left_out_of_the_y_range(monkeypatch):
    """plot_loss_curves: a run whose summary says diverged carries '(diverged, step N)' and an x where it stopped, and
    its high losses do not set the y range."""
    import sigprop.plots.training as training
    from sigprop.runs import Runs

    figs = []
    monkeypatch.setattr(training, "savefig", lambda fig, path: figs.append(fig) or [])
    steps = np.arange(0, 101, 10)
    metrics = pd.concat([pd.DataFrame({"run": "a", "step": steps, "time": steps, "loss": 5 - steps / 50, "eval_loss": 5 - steps / 50}),
                         pd.DataFrame({"run": "b", "step": steps[:4], "time": steps[:4], "loss": 9.0, "eval_loss": 9.0})])
    summaries = pd.DataFrame({"run": ["a", "b"], "status": ["done", "diverged"], "step": [100, 30]})
    runs = Runs(metrics, pd.DataFrame(), pd.DataFrame({"run": ["a", "b"], "block": ["pre-ln", "sas-p"]}), summaries, {})
    training.plot_loss_curves(runs, "unused", headroom=0.5)
    fig = figs[0]
    assert legend_texts(fig.legends[0])[:2] == ["Pre-LN", "SAS-P (diverged, step 30)"]
    assert fig.axes[0].get_ylim()[1] < 9.0
    assert any(ln.get_marker() == "x" for ln in fig.axes[0].get_lines())
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# gpu_gap and catch-up: titles apart, the LR a run reached, both curves visible, a cue for the sign
# ------------------------------------------------------------------------------------------------


def test_gpu_gap_titles_apart_lr_reached_and_sas_p_visible_under_sas(tmp_path, monkeypatch, drawn):
    replot("gpu", tmp_path, monkeypatch, scale="gpu")
    fig = drawn["gpu_gap"]
    short, prefix = fig.axes[:2]
    r = renderer(fig)
    assert not overlap(short.title.get_window_extent(r), prefix.title.get_window_extent(r))
    assert "lr rising to 0.0006" in prefix.get_title() and "lr 0.001 at step 2,000" in prefix.get_title()
    assert "lr 0.0006," not in prefix.get_title()  # the LR reached at step 1,200 is not called the peak
    lines = {ln.get_color(): ln for ln in short.get_lines() if len(ln.get_xdata()) > 2}
    sas_p, sas = lines["#9467bd"], lines["#2ca02c"]
    assert sas_p.get_linewidth() > sas.get_linewidth() and sas.get_zorder() > sas_p.get_zorder()  # a wider line below
    assert sas_p.get_marker() != sas.get_marker()
    assert "SAS diverged (step 782)" in legend_texts(fig.legends[0])


def test_gap_plot_keys_apart_and_says_which_side_is_ahead(tmp_path, monkeypatch):
    import sigprop.plots.catchup as catchup

    figs = []
    monkeypatch.setattr(catchup, "savefig", lambda fig, path: figs.append(fig) or [])
    tokens = np.geomspace(1e5, 1e7, 20)
    curves = pd.concat([pd.DataFrame({"size": "4x128", "block": b, "step": range(20), "tokens": tokens, "mean": m,
                                      "std": 0.5, "n": 3}) for b, m in (("sas-p", 3.0), ("sas", 3.1))])
    catchup.plot_gap_vs_tokens(curves, "unused", reach={("4x128", "sas"): 1e6})
    fig = figs[0]
    ax = fig.axes[0]
    assert "below 0: ahead of Pre-LN" in ax.get_ylabel()
    legend = fig.legends[0]
    keys = dict(zip(legend_texts(legend), legend.legend_handles))
    floor, spread = keys["±1% (match floor)"], keys["shaded: ± 1 std over seeds"]
    assert floor.get_hatch() and not spread.get_hatch()  # hatched floor, plain shading: never two alike grey patches
    assert {"SAS-P", "SAS"} <= keys.keys()
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# rank collapse: one legend entry per curve, theory keyed apart
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["rank-collapse-at-init", "rank-collapse"])
def test_rank_collapse_legend_is_the_curves_drawn_and_theory_has_its_own_key(folder):
    from sigprop.plots.signal import depth_curves
    from sigprop.plots.style import block_style

    df = pd.read_csv(GALLERY / folder / "metrics.csv")
    fig = depth_curves(df)
    blocks, key = fig.legends
    measured = {ln.get_label() for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "-"}
    assert sorted(legend_texts(blocks)) == sorted(measured) == sorted(block_style(b)["label"] for b in df.block.unique())
    assert len(legend_texts(blocks)) == df[df.source == "measured"].block.nunique()
    assert legend_texts(key) == ["measured (solid, each block's marker)", "theory, infinite width (dashed, the block's colour)"]
    drawn = {ln.get_color() for ax in fig.axes for ln in ax.get_lines()}
    assert not any(max(to_rgb(c)) - min(to_rgb(c)) <= 0.15 for c in drawn)  # no curve is grey like a key
    plt.close(fig)


def test_the_committed_rank_collapse_figure_is_what_its_records_draw(tmp_path):
    """The README's hero is redrawn from its own metrics.csv: the committed PNG is byte-identical to a redraw."""
    import shutil

    from sigprop.recipes.rank_collapse import replot

    src = GALLERY / "rank-collapse-at-init"
    for name in ("metrics.csv", "analysis.json"):
        shutil.copy(src / name, tmp_path / name)
    replot(tmp_path)
    assert (tmp_path / "rank_collapse.png").read_bytes() == (src / "rank_collapse.png").read_bytes()


# ------------------------------------------------------------------------------------------------
# cos-training and fig3: stamps and labels from the drawn data
# ------------------------------------------------------------------------------------------------


def test_cos_training_stamp_and_titles_come_from_the_drawn_runs(tmp_path, monkeypatch, drawn):
    replot("cos-training", tmp_path, monkeypatch)
    fig = drawn["cos_training"]
    result = json.loads((tmp_path / "result.json").read_text())
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["Pre-LN, seed 0", "Naive skipless, seed 0", "SAS-P, seed 0"]
    seeds = {b: sorted(map(int, v)) for b, v in result["numbers"]["final_max_cos_mean"].items()}
    text = stamp(fig)
    assert "heatmaps: one run each, seed 0" in text
    for block, label in (("pre-ln", "Pre-LN"), ("sas-p", "SAS-P"), ("skipless", "Naive skipless")):
        assert f"{label} {', '.join(map(str, seeds[block]))}" in text


def test_fig3_reference_lines_are_told_apart(tmp_path, monkeypatch, drawn):
    replot("fig3", tmp_path, monkeypatch)
    fig = drawn["fig3"]
    ax = fig.axes[0]
    refs = [ln for ln in ax.get_lines() if ln.get_label().startswith(("Pre-LN", "V-SkipInit"))]
    assert len(refs) == 2 and refs[0].get_linestyle() != refs[1].get_linestyle()
    labels = [t for t in ax.texts if t.get_text().startswith(("Pre-LN", "V-SkipInit"))]
    assert sorted(t.get_text().split()[0] for t in labels) == ["Pre-LN", "V-SkipInit"]
    r = renderer(fig)
    assert not overlap(labels[0].get_window_extent(r), labels[1].get_window_extent(r))
    numbers = json.loads((tmp_path / "result.json").read_text())["numbers"]
    assert f"{np.mean(list(numbers['pre-ln'].values())):.3f}" in " ".join(t.get_text() for t in labels)


@pytest.mark.parametrize("name", ["fig5", "gpu", "cos-training", "fig3"])
def test_the_committed_figures_are_what_their_records_draw(tmp_path, monkeypatch, name):
    """A replot into a copy of figures/<name> changes no byte: the committed figures carry these fixes (and a replot
    is deterministic)."""
    import shutil

    import sigprop.recipes.executor as executor
    import sigprop.recipes.records as records

    shutil.copytree(records.GALLERY / name, tmp_path / "figures" / name)
    monkeypatch.setattr(records, "GALLERY", tmp_path / "figures")
    monkeypatch.setattr(executor, "ensure_run", lambda *a, **k: pytest.fail("--replot must not train"))
    before = {p: p.read_bytes() for p in (tmp_path / "figures" / name).glob("*.*")}
    reproduce(name, quiet=True, replot=True)
    assert [p.name for p, b in before.items() if p.read_bytes() != b] == []
