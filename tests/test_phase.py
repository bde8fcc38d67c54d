"""Phase diagrams: theory over a knob grid predicts where tokens collapse; measured points agree."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sigprop.cli import app
from sigprop.errors import SigpropError
from sigprop.studies.phases import DIAGRAMS, TOLERANCE, phase

TINY = dict(width=64, heads=2, seq_len=16, batch=2, data="random", vocab_size=128, progress=False)


def _cos(p, x, y):
    g = p.grid[(p.grid.metric == "cos_mean")]
    return float(g[(g.x == x) & (g.y == y)].value.iloc[0])


@pytest.mark.slow
def test_shaped_attention_alpha_gamma():
    """A = alpha I + (1 - gamma) C at init: identity-dominated (gamma = 1) keeps tokens apart, C-dominated collapses."""
    p = phase("shaped-alpha-gamma", measure_points=[(1.0, 1.0), (0.125, 0.0), (1.5, 0.5)], **TINY)
    assert _cos(p, 1.0, 1.0) < 0.2  # the paper's setting: A = I
    assert _cos(p, 0.125, 0.0) > 0.95  # mostly uniform attention: rank collapse
    assert _cos(p, 1.5, 1.0) < _cos(p, 1.5, 0.5) < _cos(p, 1.5, 0.0)  # more C -> more aligned tokens
    assert p.agrees, p.points
    assert set(p.points.metric) == {"cos_mean", "eff_rank"} and (p.points.gap <= TOLERANCE["eff_rank"] * p.points.theory.abs().max()).all()


def test_depth_beta_ff_uses_the_prefix_of_one_deep_propagation():
    p = phase("sas-depth-beta_ff", measure_points=[(1.0, 12)], **{**TINY, "width": 768, "heads": 4})  # the paper's width:
    # with init std 0.02 the MLP branch's share of the stream grows like d^2, so narrow nets barely move
    col = p.grid[(p.grid.metric == "cos_mean") & (p.grid.x == 1.0)].sort_values("y")
    assert col.value.is_monotonic_increasing  # an undamped MLP branch aligns tokens more with every block
    assert col.value.iloc[-1] > col.value.iloc[0] + 0.2
    assert p.agrees, p.points  # the measured depth-12 network matches the 12th layer of the 72-layer propagation


def test_cli_lists_diagrams_and_rejects_unknown_ones():
    r = CliRunner().invoke(app, ["phase", "--list"])
    assert r.exit_code == 0 and all(name in r.output for name in DIAGRAMS)
    with pytest.raises(SigpropError, match="unknown phase diagram"):
        phase("nope", **TINY)


@pytest.mark.slow
def test_pre_ln_alpha_beta_from_the_cli(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["phase", "-d", "pre-ln-alpha_sa-beta_sa", "--width", "32", "--heads", "2", "--seq-len", "16",
                            "--batch", "2", "--data", "random", "--vocab-size", "128", "--no-measure", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pre-ln-alpha_sa-beta_sa.png").exists() and (tmp_path / "pre-ln-alpha_sa-beta_sa.csv").exists()
    import pandas as pd

    g = pd.read_csv(tmp_path / "pre-ln-alpha_sa-beta_sa.csv")
    g = g[g.metric == "cos_mean"].set_index(["x", "y"]).value
    assert g[(0.0, 1.0)] > g[(1.0, 1.0)] + 0.1  # removing the skip (skipless) collapses more than Pre-LN


def test_context_length_depth_collapses_with_depth_and_a_longer_context_holds_longer():
    """Naive skipless attention (W^Q random, tiny logits: causal averaging) collapses every context with depth; at a
    fixed depth a longer context is less aligned (more early-late pairs); the measured point (the first T tokens of the
    batch) agrees with the theory cut to T."""
    p = phase("context-depth", measure_points=[(32, 4)], **{**TINY, "width": 256, "heads": 4})
    g = p.grid[p.grid.metric == "cos_mean"].pivot_table(index="y", columns="x", values="value")
    assert list(g.columns) == [4, 8, 16, 32, 64, 128, 256]
    assert (g.diff(axis=0).iloc[1:] >= -1e-9).all().all() and (g.loc[18] > 0.999).all()  # deeper: more aligned, collapsed
    assert g.loc[4].is_monotonic_decreasing and g.loc[4, 4] > g.loc[4, 256] + 0.05
    assert p.settings["seq_len"] == 256 and p.agrees, p.points
