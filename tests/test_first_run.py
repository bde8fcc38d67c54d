"""First-run polish (issue 11, items 11, 12, 14, 15): no stray library output, one option name for the
vocabulary, and figures whose legends and colours say what is drawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from typer.testing import CliRunner

from sigprop.cli import app
from sigprop.errors import SigpropError

REPO = Path(__file__).resolve().parents[1]


def luminance(colour) -> float:
    r, g, b = to_rgb(colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# ------------------------------------------------------------------------------------------------ 12. noise


def test_memory_profiling_prints_nothing_on_stderr():
    code = "import torch; from sigprop.perf.timers import cpu_step_peak_bytes; cpu_step_peak_bytes(lambda: torch.ones(1000) + 1)"
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "USDT" not in r.stderr and "profiler_start" not in r.stderr, r.stderr


def test_a_bad_local_source_is_one_line_without_the_library_log(tmp_path, capfd):
    pytest.importorskip("datasets")
    from sigprop.data.codeparrot import records_corpus

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x"\n')
    with pytest.raises(SigpropError) as e:
        records_corpus(str(bad))
    msg = str(e.value)
    assert "without network" not in msg and "accepted: .jsonl" in msg and "\n" not in msg
    assert "Failed to load JSON" not in capfd.readouterr().err


def test_a_garbage_checkpoint_does_not_quote_torch_advice(tmp_path):
    from sigprop.training.checkpoint import load_checkpoint

    ck = tmp_path / "last.pt"
    ck.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(SigpropError) as e:
        load_checkpoint(ck)
    assert "corrupt checkpoint" in str(e.value) and "weights_only" not in str(e.value) and "Weights only" not in str(e.value)


def test_progress_shows_a_dash_before_the_first_eval():
    from sigprop.training.loop import _fmt

    assert _fmt(None) == "–" and _fmt(2.34567) == "2.346"


# ------------------------------------------------------------------------------------------------ 14. --vocab-size


@pytest.mark.parametrize("command", ["train", "bench", "blocks", "analyze", "data prepare"])
def test_every_command_names_the_vocabulary_vocab_size(command):
    r = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--vocab-size" in r.output
    assert "--vocab " not in r.output  # the old name is a hidden alias


def test_the_old_vocab_name_still_works():
    a = CliRunner().invoke(app, ["blocks", "--block", "sas", "--depth", "2", "--width", "64", "--heads", "2", "--vocab", "1000"])
    b = CliRunner().invoke(app, ["blocks", "--block", "sas", "--depth", "2", "--width", "64", "--heads", "2", "--vocab-size", "1000"])
    assert a.exit_code == b.exit_code == 0 and a.output == b.output and "V=1000" in a.output
    from sigprop.cli.app import pick_vocab

    with pytest.raises(SigpropError, match="disagree"):
        pick_vocab(100, 200)


# ------------------------------------------------------------------------------------------------ 15. figures


@pytest.fixture()
def captured(monkeypatch):
    """Figures the plot functions would save, kept open for inspection."""
    figs = []

    def keep(fig, path, formats=("png", "pdf")):
        figs.append(fig)
        return []

    for mod in ("sigprop.plots.training", "sigprop.plots.bench"):
        monkeypatch.setattr(f"{mod}.savefig", keep)
    yield figs
    plt.close("all")


def test_loss_figure_legend_explains_the_thin_lines_and_time_is_in_minutes(captured):
    from sigprop.plots.training import plot_loss_curves
    from sigprop.runs import Runs

    steps = np.arange(1, 21)
    metrics = pd.concat([pd.DataFrame({"run": r, "step": steps, "time": steps * 3.0, "loss": 6 - 0.1 * steps,
                                       "eval_loss": np.where(steps % 5 == 0, 6 - 0.1 * steps, np.nan)}) for r in ("a", "b")])
    runs = Runs(metrics, pd.DataFrame(), pd.DataFrame({"run": ["a", "b"], "block": ["pre-ln", "sas"]}), pd.DataFrame(), {})
    plot_loss_curves(runs, "unused")
    fig = captured[0]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["Pre-LN", "SAS"] and "thin: train loss (smoothed)" in legend
    assert "minute" in fig.axes[1].get_title() and "second" not in fig.axes[1].get_title()
    assert fig.axes[1].get_xlabel() == "training time (minutes)"


def test_no_block_colour_is_grey_and_the_last_layer_is_visible_on_white():
    from sigprop.plots.style import BLOCK_STYLE, block_style, layer_colors

    for name in list(BLOCK_STYLE) + [f"custom-{i}" for i in range(6)]:
        r, g, b = to_rgb(block_style(name, int(name[-1]) if name[-1].isdigit() else 0)["color"])
        assert max(r, g, b) - min(r, g, b) > 0.15, name  # theory / reference lines are grey
    colours = layer_colors(18)
    assert len(colours) == 18 and luminance(colours[-1]) < 0.7 and luminance(colours[0]) < 0.2


def test_probe_titles_are_typeset():
    from sigprop.plots.training import PROBE_PANELS

    assert all("$" in title for _, _, title in PROBE_PANELS)


def test_kernel_grid_fills_its_figure_and_the_colour_bar_spans_the_heatmaps():
    from sigprop.plots.signal import kernel_grid

    k = {b: {layer: np.eye(8) for layer in (0, 9, 18)} for b in ("pre-ln", "skipless", "sas", "sas-p")}
    fig = kernel_grid(k)
    fig.canvas.draw()
    heat = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    bar = [ax for ax in fig.axes if ax not in heat][0]
    bottom, top = min(ax.get_position().y0 for ax in heat), max(ax.get_position().y1 for ax in heat)
    assert bottom < 0.08 and top > 0.85  # no empty band below the heatmaps
    assert bar.get_position().height > 0.8 * (top - bottom)  # the bar spans them instead of floating
    plt.close(fig)


def test_bench_legend_has_no_block_coloured_mode_patch(captured):
    from sigprop.perf.benchmark import bench
    from sigprop.plots.bench import plot_bench

    df = bench(["sas"], seq=16, mode="train,infer", depth=1, width=16, heads=2, vocab=32, tokens=32, repeats=1,
               warmup=0, progress=False, memory=False)
    plot_bench(df, "unused")
    legend = captured[0].legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["FLOP ideal", "train", "infer"]
    patches = legend.get_patches() if hasattr(legend, "get_patches") else legend.legend_handles[1:]
    for p in patches:
        r, g, b = to_rgb(p.get_facecolor())
        assert max(r, g, b) - min(r, g, b) < 0.01  # neutral: the colour of a bar says the block, not the mode
