"""`analyze` and `sigprop analyze`: rank collapse of naive skipless attention, none for SAS, at init."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import sigprop as sp
from sigprop.studies.analysis import analyze, verdict
from sigprop.cli import app
from sigprop.errors import SigpropError

runner = CliRunner()
SMALL = dict(depth=6, width=256, heads=4, seq_len=32, batch=4, data="random", vocab_size=512, progress=False)


@pytest.fixture(scope="module")
def four_blocks():
    return analyze(["pre-ln", "skipless", "sas", "sas-p"], **SMALL)


def test_naive_skipless_collapses_while_sas_keeps_the_input_geometry(four_blocks):
    a = four_blocks
    skipless, sas, sasp = (a.measured(b) for b in ("skipless", "sas", "sas-p"))
    assert skipless[-1] > 0.95 and a.measured("skipless", "eff_rank")[-1] < 2.0
    for cos in (sas, sasp):
        assert np.abs(cos - cos[0]).max() < 0.03
    assert a.measured("sas", "eff_rank")[-1] > 0.8 * a.measured("sas", "eff_rank")[0]
    assert a.verdicts["skipless"].startswith("rank collapse")
    assert a.verdicts["sas"].startswith("no rank collapse")


def test_metrics_are_tidy_and_theory_is_attached(four_blocks):
    m = four_blocks.metrics
    assert set(m.columns) == {"block", "layer", "metric", "value", "source"}
    assert set(m.source) == {"measured", "theory"}
    assert m.layer.max() == 6 and m.layer.min() == 0
    t = four_blocks.table("sas")
    assert list(t.columns) == ["layer", "cos_mean", "eff_rank", "rank1_residual", "norm_sq", "theory_cos_mean"]
    assert len(t) == 7
    assert (four_blocks.summary()["max |theory - measured| cos"] < 0.1).all()
    assert "<table" in four_blocks._repr_html_()
    assert set(four_blocks.kernels["sas"]) == set(range(7))
    assert four_blocks.kernels["sas"][0].shape == (32, 32)


def test_the_same_weights_seed_and_batch_for_every_block(four_blocks):
    m = four_blocks.metrics
    emb = m[(m.layer == 0) & (m.metric == "cos_mean") & (m.source == "measured")]
    assert emb.value.nunique() == 1  # identical embeddings -> identical layer-0 metrics


def test_save_writes_figures_and_tables(four_blocks, tmp_path):
    paths = four_blocks.save(tmp_path)
    names = {p.name for p in paths}
    assert {"metrics.csv", "analysis.json", "rank_collapse.png", "rank_collapse.pdf", "kernels.png"} <= names
    assert all(p.stat().st_size > 5000 for p in paths if p.suffix in (".png", ".pdf"))
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == len(four_blocks.metrics)


def test_verdicts():
    assert verdict(np.array([0.05, 0.5, 0.93, 0.99])).startswith("rank collapse: cos_mean reaches 0.93 by layer 2")
    assert verdict(np.array([0.05, 0.3, 0.6])).startswith("tokens align")
    assert verdict(np.array([0.05, 0.06, 0.07])).startswith("no rank collapse: cos_mean stays within 0.02")


def test_knob_overrides_reach_the_model():
    a = analyze("sas", sets=["beta_ff=1.0", "mlp_mult=8"], theory=False, **SMALL)
    assert a.specs["sas"].beta_ff == 1.0 and a.specs["sas"].mlp_mult == 8
    assert set(a.metrics.source) == {"measured"}


def test_code_data_on_a_small_corpus(tmp_path):
    a = sp.analyze("sas", data="code", cache_dir=str(tmp_path), max_bytes=400_000, vocab_size=1024,
                   depth=2, width=64, heads=4, seq_len=32, batch=2, progress=False)
    assert a.settings["data_desc"].startswith("code")
    assert a.measured("sas").shape == (3,)


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_shaped_attention_at_init_is_exactly_uniform_and_pre_ln_is_not(kind):
    """W^Q = 0 makes every softmax row uniform over its keys (the causal prefix in a decoder): entropy ratio 1 at
    every layer; Pre-LN's random W^Q does not. Without attention=True there is no attention table (one line)."""
    a = analyze(["sas", "pre-ln"], **{**SMALL, "depth": 3}, kind=kind, attention=True, theory=False)
    sas, pre = (a.attention_table(b).set_index("layer") for b in ("sas", "pre-ln"))
    assert list(sas.index) == [1, 2, 3] and np.allclose(sas.attn_entropy_ratio, 1.0, atol=1e-6)
    assert np.allclose(sas.attn_entropy_ratio_max, 1.0, atol=1e-6)
    assert (pre.attn_entropy_ratio < 1 - 1e-6).all() and (pre.attn_entropy_ratio > 0.5).all()
    with pytest.raises(SigpropError, match="no attention statistics for 'sas'; run analyze\\(..., attention=True\\)"):
        analyze("sas", **{**SMALL, "depth": 2}, theory=False).attention_table("sas")


def test_bad_input_is_one_line():
    for kw, msg in [({"data": "wiki"}, "unknown data 'wiki'; accepted: code, random, repeat"),
                    ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
                    ({"heads": 5}, "width 256 is not divisible by heads 5")]:
        with pytest.raises(SigpropError) as e:
            analyze("sas", **{**SMALL, **kw})
        assert msg in str(e.value)
    with pytest.raises(SigpropError, match="unknown block 'sass'"):
        analyze("sass", **SMALL)


CLI = ["analyze", "--depth", "3", "--width", "64", "--heads", "4", "--seq-len", "16", "--batch", "2", "--data", "random", "--vocab-size", "100"]


def test_cli_table_and_json(tmp_path):
    r = runner.invoke(app, CLI + ["--block", "skipless,sas"])
    assert r.exit_code == 0, r.output
    assert "skipless" in r.output and "theory_cos_mean" in r.output and "sas:" in r.output
    r = runner.invoke(app, CLI + ["--block", "sas", "--format", "json"])
    assert r.exit_code == 0, r.output
    payload = json.loads(r.output)
    assert payload["settings"]["depth"] == 3 and len(payload["metrics"]) > 0
    r = runner.invoke(app, CLI + ["--block", "sas", "--attention", "--kind", "encoder"])
    assert r.exit_code == 0, r.output
    assert "sas: attention" in r.output and "attn_entropy_ratio" in r.output and "1.000" in r.output
    r = runner.invoke(app, CLI + ["--block", "sas", "--format", "csv", "--no-theory"])
    assert r.output.startswith("block,layer,metric,value,source")


def test_cli_out_dir_is_never_clobbered(tmp_path):
    out = tmp_path / "an"
    r = runner.invoke(app, CLI + ["--block", "sas", "--out", str(out)])
    assert r.exit_code == 0 and (out / "rank_collapse.png").exists()
    r = runner.invoke(app, CLI + ["--block", "sas", "--out", str(out)])  # re-running an analysis is fine
    assert r.exit_code == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = runner.invoke(app, CLI + ["--block", "sas", "--out", str(foreign)])
    assert r.exit_code != 0 and isinstance(r.exception, SigpropError)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sigprop", "analyze", "--block", "sass"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: unknown block 'sass'; accepted:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_analyze_shows_progress_when_piped():
    """Piped (stderr not a terminal), each probed block gets a progress line instead of an invisible bar."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sigprop", "analyze", "--block", "pre-ln,sas", "--depth", "2", "--width", "32",
                        "--heads", "2", "--seq-len", "16", "--batch", "2", "--data", "random", "--vocab-size", "128", "--no-theory"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("probing 2 block(s) at init")]
    assert [ln.split(": ")[1].split(" (")[0] for ln in lines] == ["1/2 pre-ln", "2/2 sas"], r.stderr
