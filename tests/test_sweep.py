"""sweep: a tidy grid of analyze runs, cached per point; bands over seeds; the theory gap shrinks with width."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import sigprop.studies.sweeps as S
from sigprop.cli import app
from sigprop.errors import SigpropError

TINY = dict(seq_len=16, batch=2, data="random", vocab_size=128, heads=2, progress=False, workers=1)


def test_parse_grid():
    assert S.parse_grid(["beta_ff=0.05,0.1", "norm=layer"]) == {"beta_ff": [0.05, 0.1], "norm": ["layer"]}
    assert S.parse_grid(["trainable=beta_sa,attn"]) == {"trainable": [("beta_sa", "attn")]}
    with pytest.raises(SigpropError, match="knob"):
        S.parse_grid(["beta_f=0.1"])
    with pytest.raises(SigpropError, match="expected knob=value"):
        S.parse_grid(["beta_ff"])


def test_sweep_is_tidy_and_resumes_from_its_cache(tmp_path, monkeypatch):
    s = S.sweep("sas", widths=[16, 32], depths=2, seeds=2, grid={"beta_ff": [0.1, 0.5]}, out=tmp_path, **TINY)
    assert s.variables == ["block", "width", "depth", "seed", "beta_ff"]
    assert {"block", "width", "depth", "seed", "beta_ff", "layer", "metric", "value", "source"} <= set(s.df.columns)
    assert len(s.df.drop_duplicates(s.variables)) == 2 * 2 * 2
    assert len(list((tmp_path / "points").glob("*.csv"))) == 8
    b = s.bands()
    last = b[(b.metric == "cos_mean") & (b.layer == 2) & (b.source == "measured")]
    assert (last.seeds == 2).all() and (last["std"] > 0).all()  # two seeds differ
    # a bigger MLP-branch gain moves the final kernel further from the embedding's (the knob is really applied)
    emb = b[(b.metric == "cos_mean") & (b.layer == 0) & (b.source == "measured")].set_index(["width", "beta_ff"])["mean"]
    moved = (last.set_index(["width", "beta_ff"])["mean"] - emb).abs()
    assert (moved.xs(0.5, level="beta_ff") > moved.xs(0.1, level="beta_ff")).all()

    def boom(*a, **k):
        raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr(S, "run_point", boom)
    again = S.sweep("sas", widths=[16, 32], depths=2, seeds=2, grid={"beta_ff": [0.1, 0.5]}, out=tmp_path, **TINY)
    pd.testing.assert_frame_equal(again.df, s.df)


def test_bad_sweeps_are_one_line_errors():
    with pytest.raises(SigpropError, match="not divisible by heads"):
        S.sweep("sas", widths=[30], **{**TINY, "heads": 4})
    with pytest.raises(SigpropError, match="init scaling"):
        S.sweep("sas", widths=[16], init="mup", **TINY)
    with pytest.raises(SigpropError, match="init_std"):
        S.sweep("sas", widths=[16], init="fan-in", grid=["init_std=0.02"], **TINY)


def test_theory_gap_shrinks_like_inverse_sqrt_width():
    """Where theory is exact (W^Q = 0) the measured-theory gap is finite-width noise: slope about -1/2."""
    s = S.sweep(["sas", "v-skipinit"], widths=[16, 32, 64, 128], depths=3, seeds=3, init="fan-in",
                **{**TINY, "seq_len": 24})
    sl = s.slopes().set_index("block")["slope"]
    assert ((sl < -0.25) & (sl > -1.0)).all(), sl
    conv = s.convergence()
    assert set(conv.columns) >= {"block", "width", "seed", "layer", "measured", "theory", "gap"}
    assert (conv.layer >= 1).all()


def test_cli_sweep_writes_table_and_figures(tmp_path):
    out = tmp_path / "sw"
    r = CliRunner().invoke(app, ["sweep", "--block", "pre-ln,sas", "--width", "16,32", "--depth", "2", "--seeds", "2",
                                 "--heads", "2", "--seq-len", "16", "--batch", "2", "--data", "random",
                                 "--vocab-size", "128", "--workers", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "final-layer cos_mean" in r.output and "slope" in r.output
    df = pd.read_csv(out / "sweep.csv")
    assert set(df.block) == {"pre-ln", "sas"} and set(df.width) == {16, 32}
    assert {"bands.csv", "bands_cos_mean.png", "bands_eff_rank.pdf", "convergence.png"} <= {p.name for p in out.iterdir()}
    assert np.isfinite(pd.read_csv(out / "convergence.csv")["slope"]).all()
    bad = CliRunner().invoke(app, ["sweep", "--width", "16,x", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "comma-separated integers" in str(bad.exception)


@pytest.mark.slow
def test_coordinate_check_pre_ln_grows_with_width_sas_p_stream_does_not(tmp_path):
    """At the paper's fixed init std 0.02, Pre-LN's branches add variance ~ d to the stream, so its RMS climbs
    with width; SAS-P has no skip and a normalised stream, so its stream RMS is flat in width."""
    c = S.sweep(["pre-ln", "sas-p"], widths=[16, 32, 64], depths=2, seeds=1, coord_steps=2, **{**TINY, "batch": 2})
    assert {"step", "point", "layer", "metric", "value"} <= set(c.df.columns)
    assert set(c.df.step) == {0, 1, 2} and set(c.df.point) == {"stream", "attn_out", "mlp_out"}
    g = c.growth().set_index(["block", "point", "step"])["log2_rms_per_doubling"]
    assert g[("pre-ln", "stream", 0)] > 0.3 and g[("pre-ln", "stream", 2)] > 0.3
    assert abs(g[("sas-p", "stream", 0)]) < 0.1 and abs(g[("sas-p", "stream", 2)]) < 0.1
    assert (c.df.value > 0).all()
    names = {p.name for p in c.save(tmp_path)}
    assert {"coord.csv", "coord_growth.csv", "coord_check.png"} <= names


def test_api_grids_are_coerced_and_checked_like_cli_ones():
    assert S.coerce_grid({"beta_ff": ["0.1", 0.2], "trainable": [("beta_sa", "attn")]}) == {
        "beta_ff": [0.1, 0.2], "trainable": [("beta_sa", "attn")]}
    assert S.Point("sas", 8, 2, 0, (("trainable", ("beta_sa", "attn")),)).sets() == ["trainable=beta_sa,attn"]
    with pytest.raises(SigpropError, match="norm"):
        S.sweep("sas", widths=[16], grid={"norm": ["batch"]}, **TINY)  # fails before any point runs
