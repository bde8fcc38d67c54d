"""Backward probes during training: gradients and update-to-weight ratios in the probe records."""

from __future__ import annotations

import pytest
import torch

from sigprop import build_model
from sigprop.probes import UpdateRatios
from sigprop.training import SCALES, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sigprop.data import load_data

    c = SCALES["ci"]
    return load_data("code", vocab_size=c.vocab_size, seq_len=c.seq_len, cache_dir=tmp_path_factory.getbasetemp() / "sigprop-cache",
                     progress=False, max_bytes=c.max_bytes)


def test_update_ratio_is_relative_frobenius_change() -> None:
    model = build_model("pre-ln", seed=0, depth=2, width=32, heads=4, vocab_size=64, context=16)
    track = UpdateRatios()
    assert track(model).empty  # nothing to compare with yet
    w = model.blocks[1].attn.w_q.weight
    with torch.no_grad():
        w.mul_(1.01)
    rows = track(model).set_index("module")
    assert rows.loc["blocks.1.attn.W_Q", "value"] == pytest.approx(0.01, rel=1e-4)
    assert rows.loc["blocks.1.attn.W_Q", "layer"] == 2
    assert rows.loc["blocks.0.attn.W_Q", "value"] == 0.0


def test_training_records_gradients_and_update_ratios(tmp_path, data) -> None:
    run = train("pre-ln", "ci", tmp_path / "r", data=data, quiet=True, steps=10, probe_grad=True)
    p = run.probes()
    grad = p[p.source == "grad"]
    assert sorted(grad.step.unique()) == [0, 10]
    assert {"grad_norm", "grad_cos_mean", "grad_W_Q", "grad_W_K", "grad_W_V", "grad_mlp"} <= set(grad.metric)
    assert (grad[grad.metric == "grad_norm"].value > 0).all()
    upd = p[p.source == "update"]
    assert list(upd.step.unique()) == [10]  # the first probe has nothing to compare with
    assert (upd.value > 0).all() and (upd.value < 1).all()  # AdamW moved every matrix, by a fraction of its size
    plain = train("pre-ln", "ci", tmp_path / "plain", data=data, quiet=True, steps=10)
    assert set(plain.probes().source) == {"probe", "gain"}
    assert plain.summary["final_train_loss"] == pytest.approx(run.summary["final_train_loss"], rel=1e-6)  # numbers unchanged


def test_training_probes_the_branch_outputs_when_asked(tmp_path, data) -> None:
    """probe_branches: each block's attention and MLP outputs get their own rows (source attn_out / mlp_out, the
    block's layer number), so a token-independent MLP output (cos_mean -> 1) shows during training; the
    numbers of the run do not change."""
    run = train("sas-p", "ci", tmp_path / "b", data=data, quiet=True, steps=10, probe_branches=True)
    p = run.probes()
    for kind in ("attn_out", "mlp_out"):
        rows = p[(p.source == kind) & (p.metric == "cos_mean")]
        assert sorted(rows.step.unique()) == sorted(p[p.source == "probe"].step.unique()) and sorted(rows.layer.unique()) == [1, 2]
        assert set(rows.module) == {f"blocks.{i}.hook_{kind}" for i in range(2)}
    plain = train("sas-p", "ci", tmp_path / "plain", data=data, quiet=True, steps=10)
    assert plain.summary["final_train_loss"] == pytest.approx(run.summary["final_train_loss"], rel=1e-6)
