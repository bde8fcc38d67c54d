"""Outlier features (the paper's sequel, He et al. 2024): the OP block, the outlier probes against the authors'
definitions, W8A8 fake quantisation, Muon, and theory's batch correlation at init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import sigprop as sp
from sigprop.blocks.model import ModelConfig
from sigprop.errors import SigpropError
from sigprop.probes.metrics import OUTLIER_METRICS, batch_corr_of_kernel, kurtosis, outlier_stats, sink_share
from sigprop.studies.theory import propagate_batch
from sigprop.training import get_config, train
from sigprop.training.optim import Optimizers, make_optimizer
from sigprop.training.quant import fake_int8, w8a8
from tests.hf_tiny import VOCAB, tiny_models


def fixed_activations() -> torch.Tensor:
    """(3, 7, 16) activations with one outlier feature (index 5) and a massive entry at sequence 1, token 4."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 16, generator=g, dtype=torch.float64)
    x[..., 5] *= 8.0
    x[1, 4, 11] = 60.0
    return x


def anchor_reference(x: np.ndarray) -> dict[str, float]:
    """The sequel's `report_outliers` statistics, written out in NumPy from its definitions."""
    xc = x - x.mean(-1, keepdims=True)
    x_rms = np.sqrt((xc**2).mean()) + 1e-8
    f = xc.reshape(-1, x.shape[-1]) / x_rms
    n, d = f.shape
    feat = f.T @ f / n
    batch = f @ f.T / d
    a = np.abs(xc)
    lower_median = np.sort(a, -1)[..., (d - 1) // 2]  # torch.median's convention
    flat = np.abs(x).reshape(-1)
    return {
        "x_rms": x_rms,
        "of_kurtosis": np.var(np.diag(feat), ddof=1),
        "feat_corr_rms": np.sqrt((feat[~np.eye(d, dtype=bool)] ** 2).mean()),
        "batch_corr_mean": batch[~np.eye(n, dtype=bool)].mean(),
        "batch_corr_rms": np.sqrt((batch[~np.eye(n, dtype=bool)] ** 2).mean()),
        "max_median_ratio": (a.max(-1) / lower_median).mean(),
        "massive_ratio": flat.max() / np.sort(flat)[(flat.size - 1) // 2],
    }


def test_each_outlier_statistic_equals_the_anchor_definition_in_numpy():
    x = fixed_activations()
    got = outlier_stats(x)
    assert set(got) == set(OUTLIER_METRICS)
    for name, want in anchor_reference(x.numpy()).items():
        assert float(got[name]) == pytest.approx(want, rel=1e-10), name
    assert int(got["massive_feature"]) == 11 and int(got["massive_token"]) == 4
    assert float(got["of_kurtosis"]) > 1.0  # the outlier feature shows


def test_sequel_kurtosis_is_sigprops_kurtosis_minus_one_on_centred_pooled_activations():
    x = fixed_activations()
    xc = (x - x.mean(-1, keepdim=True)).reshape(1, -1, x.shape[-1])
    d = x.shape[-1]
    assert float(outlier_stats(x)["of_kurtosis"]) == pytest.approx(d / (d - 1) * (float(kurtosis(xc)[0]) - 1), rel=1e-6)


def test_masked_outlier_statistics_equal_those_of_the_real_tokens_alone():
    x = fixed_activations()
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    real = torch.cat([x[0, :5], x[1], x[2]])[None]
    a, b = outlier_stats(x, mask), outlier_stats(real)
    for name in OUTLIER_METRICS:
        if name != "massive_token":
            assert float(a[name]) == pytest.approx(float(b[name]), rel=1e-10), name


def test_sink_share_is_the_mean_attention_on_the_first_token_after_query_zero():
    A = torch.softmax(torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1)), -1)
    want = A[..., 1:, 0].mean((0, -1))
    assert torch.allclose(sink_share(A), want.double())
    causal = torch.tril(torch.ones(4, 4))
    uniform = (causal / causal.sum(-1, keepdim=True))[None, None]
    assert float(sink_share(uniform)[0]) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)


def test_batch_corr_of_a_kernel_equals_the_probes_measurement_of_its_features():
    x = fixed_activations()
    xc = x - x.mean(-1, keepdim=True)
    flat = xc.reshape(-1, x.shape[-1])
    mean, rms = batch_corr_of_kernel(flat @ flat.T / flat.shape[-1])
    got = outlier_stats(x)
    assert float(mean) == pytest.approx(float(got["batch_corr_mean"]), rel=1e-6)
    assert float(rms) == pytest.approx(float(got["batch_corr_rms"]), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# The OP block
# ------------------------------------------------------------------------------------------------


def test_op_preset_has_the_sequels_structure_and_parameter_count():
    L, d, H = 4, 64, 4
    op, pre = (sp.build_model(b, depth=L, width=d, heads=H, vocab_size=100, context=16) for b in ("op", "pre-ln"))
    # no pre-norms (a LayerNorm on block 1's input, weight + bias), QK-RMSNorm scales per head_dim, a LayerNorm before the head
    assert op.num_params() == pre.num_params() - 2 * d * L + 2 * d + 2 * (d // H) * L + d
    gain = 0.2 * math.sqrt(12 / L)
    for block in op.blocks:
        assert float(block.beta_sa) == pytest.approx(gain) and float(block.beta_ff) == pytest.approx(gain)
        assert isinstance(block.attn.q_norm, nn.RMSNorm) and isinstance(block.ln_2, nn.Identity)
    assert "op" in sp.BLOCKS


def test_the_soft_cap_bounds_the_logits():
    m = sp.build_model("pre-ln", sets=["logit_softcap=3"], depth=1, width=32, heads=2, vocab_size=50, context=8)
    q = torch.full((1, 2, 8, 16), 10.0)
    A, _ = m.blocks[0].attn.attention_matrix(q, q, None)
    # logits 400 would put all mass on one key; capped at 3 every row of the causal softmax stays uniform
    assert torch.allclose(A[0, 0, -1], torch.full((8,), 1 / 8))


@pytest.mark.parametrize("sets, needle", [(["logit_softcap=-1"], "logit_softcap"), (["qk_norm=foo"], "rms"),
                                           (["beta_ref_depth=0"], "beta_ref_depth")])
def test_bad_op_knobs_are_one_line_errors(sets, needle):
    with pytest.raises(SigpropError) as e:
        sp.get_spec("op", sets)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("model", [nn.Linear(4, 4), nn.Sequential()])
def test_outlier_probes_on_a_model_with_no_layers_are_one_line(model):
    with pytest.raises(SigpropError) as e:
        sp.measure(model, torch.zeros(1, 4, dtype=torch.long), outliers=True)
    assert "layers=" in str(e.value) and "\n" not in str(e.value)


def test_op_trains_at_ci_scale_with_outlier_probes_and_a_w8a8_eval(tmp_path):
    run = train("op", get_config("ci", probe_outliers=True, quant_eval=True), out=tmp_path / "op", quiet=True)
    assert run.status == "done" and math.isfinite(run.summary["final_eval_loss_w8a8"])
    pr = run.probes()
    k = pr[pr.metric == "of_kurtosis"]
    assert sorted(k.step.unique()) == [0, 10, 20] and set(k.layer) == {0, 1, 2}
    assert (pr.metric == "sink_share").any()


# ------------------------------------------------------------------------------------------------
# Outlier probes on models nobody here wrote
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "opt"])
def test_measure_outliers_reaches_every_layer_of_hf_models(family):
    model = tiny_models()[family]()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    p = sp.measure(model, idx, outliers=True)
    rows = p.per_layer
    for name in OUTLIER_METRICS:
        assert set(rows[rows.metric == name].layer) == {0, 1, 2}, name
    sinks = rows[rows.metric == "sink_share"]
    assert set(sinks.layer) == {1, 2} and sinks.value.between(0, 1).all()


def test_measure_outliers_equals_the_statistics_of_the_hidden_states_hf_returns():
    model = tiny_models()["gpt2"]()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model(idx, output_hidden_states=True).hidden_states
    p = sp.measure(model, idx, outliers=True)
    got = p.value("of_kurtosis")
    assert float(got.loc[1]) == pytest.approx(float(outlier_stats(hidden[1])["of_kurtosis"]), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# W8A8 fake quantisation and Muon
# ------------------------------------------------------------------------------------------------


def test_w8a8_rounds_weights_per_output_channel_and_inputs_per_tensor_and_restores_the_model():
    torch.manual_seed(0)
    lin = nn.Linear(8, 3)
    x = torch.randn(5, 8)
    before = lin(x)
    w, s_x = lin.weight.detach(), x.abs().max() / 127
    s_w = w.abs().amax(1, keepdim=True) / 127
    want = (torch.round(x / s_x) * s_x) @ (torch.round(w / s_w) * s_w).T + lin.bias
    with w8a8(lin) as n:
        assert n == 1 and torch.allclose(lin(x), want, atol=1e-6)
    assert torch.equal(lin(x), before)
    assert torch.equal(fake_int8(torch.zeros(3)), torch.zeros(3))


def test_w8a8_reaches_sigprops_values_and_hf_conv1d_and_skips_identity_values():
    counts = {}
    for b in ("pre-ln", "sas", "v-skipinit"):
        with w8a8(sp.build_model(b, depth=2, width=32, heads=2, vocab_size=50, context=8)) as n:
            counts[b] = n
    assert counts["pre-ln"] == 2 * 6 and counts["sas"] == 2 * 4 + 1 and counts["v-skipinit"] == 2 * 6
    gpt2 = tiny_models()["gpt2"]()
    idx = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = gpt2(idx).logits
        with w8a8(gpt2) as n:
            q = gpt2(idx).logits
    assert n == 2 * 4 and 0 < (q - full).abs().max() < 0.1 * full.abs().max()


def test_muon_steps_the_block_matrices_and_its_state_round_trips():
    model = sp.build_model("pre-ln", depth=2, width=32, heads=2, vocab_size=50, context=8)
    opt = make_optimizer(model, get_config("ci", optimizer="muon"))
    assert isinstance(opt, Optimizers) and isinstance(opt.optimizers[0], torch.optim.Muon)
    muon_ids = {id(p) for g in opt.optimizers[0].param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert names and all(n.startswith("blocks.") and n.endswith("weight") for n in names)
    _, loss = model(torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8)))
    loss.backward()
    opt.step()
    again = make_optimizer(model, get_config("ci", optimizer="muon"))
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["optimizers"][0]["state"].keys() == opt.state_dict()["optimizers"][0]["state"].keys()
    with pytest.raises(SigpropError, match="optimizer"):
        get_config("ci", optimizer="soap")


# ------------------------------------------------------------------------------------------------
# Theory: the batch correlation at init
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_theory_predicts_the_batch_correlation_at_large_width():
    """W^Q = 0 makes the prediction exact in the wide limit; measured within 0.05 at width 1024 in every layer, and
    the ordering the sequel's argument needs at init: Pre-LN above OP above SAS-P."""
    cfg = ModelConfig(depth=4, width=1024, heads=8, vocab_size=500, context=32)
    idx = torch.randint(0, 500, (3, 32), generator=torch.Generator().manual_seed(0))
    last = {}
    for block in ("pre-ln", "op", "sas-p"):
        torch.manual_seed(0)
        m = sp.build_model(block, cfg, sets=["query_init=0"])
        measured = sp.measure(m, idx, outliers=True).value("batch_corr_mean")
        with torch.no_grad():
            th = propagate_batch(m.spec, cfg, m.embed(idx))
        assert th.exact
        predicted = np.array([float(batch_corr_of_kernel(K)[0]) for K in th.kernels])
        assert np.abs(measured.to_numpy() - predicted).max() < 0.05, block
        last[block] = predicted[-1]
    assert last["pre-ln"] > last["op"] > last["sas-p"]
