"""The norm-free successors as knobs of the one BlockSpec: DyT, Derf, Peri-LN, gated attention, value residual, nGPT
and the outlier sequel's OP block --
definitions as their papers write them, fast = explicit paths, training at ci scale, and each kernel map against
measurement at large width where it is exact (W^Q = 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sigprop as sp
from sigprop.blocks.model import ModelConfig
from sigprop.blocks.norms import Derf, DyT
from sigprop.errors import SigpropError
from sigprop.studies.theory import propagate
from sigprop.training import get_config, train

VARIANTS = [("dyt", ()), ("derf", ("derf_shift=0.2",)), ("peri-ln", ()), ("gated", ()), ("pre-ln", ("attn_gate=sigmoid-head",)),
            ("pre-ln", ("value_residual=0.5",)), ("sas-p", ("norm_position=peri",)), ("sas", ("norm=dyt", "attn_gate=sigmoid")),
            ("ngpt", ()), ("ngpt", ("sphere_alpha=0.5",)), ("op", ()), ("op", ("logit_softcap=2",)), ("op", ("qk_norm=layer",))]


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("block, sets", VARIANTS)
def test_fast_and_explicit_paths_agree(block, sets, kind):
    torch.manual_seed(0)
    m = sp.build_model(block, sets=sets, depth=3, width=64, heads=4, vocab_size=100, context=16, kind=kind)
    idx = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        fast, _ = m(idx)
        with m.attention_patterns():
            slow, _ = m(idx)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_dyt_and_derf_are_their_papers_point_wise_functions_with_an_alpha_per_place():
    x = torch.randn(3, 5, 8)
    dyt, derf = DyT(8, 0.7), Derf(8, 0.7, 0.2)
    with torch.no_grad():
        dyt.weight.uniform_(), dyt.bias.uniform_(), derf.weight.uniform_(), derf.bias.uniform_()
        assert torch.allclose(dyt(x), dyt.weight * torch.tanh(0.7 * x) + dyt.bias)
        assert torch.allclose(derf(x), derf.weight * torch.erf(0.7 * x + 0.2) + derf.bias)
    m = sp.build_model("dyt", sets=["norm_alpha=0.8", "norm_alpha_ff=0.4", "norm_alpha_final=0.2"], depth=2, width=32, heads=2,
                       vocab_size=50, context=8)
    alphas = [m.blocks[0].ln_1.alpha, m.blocks[0].ln_2.alpha, m.ln_f.alpha]
    assert [a.item() for a in alphas] == pytest.approx([0.8, 0.4, 0.2])
    assert sum(p.numel() for n, p in m.named_parameters() if n.endswith(".alpha")) == 2 * 2 + 1


def test_peri_ln_normalises_each_branch_output():
    # eps off: at init a branch's output is ~1e-3 per entry, where RMSNorm's default eps (1e-5) would still show
    m = sp.build_model("peri-ln", sets=["norm_eps=1e-12"], depth=1, width=32, heads=2, vocab_size=50, context=8)
    seen = {}
    m.blocks[0].hook_attn_out.register_forward_hook(lambda mod, i, o: seen.setdefault("attn", o))
    m.blocks[0].hook_mlp_out.register_forward_hook(lambda mod, i, o: seen.setdefault("mlp", o))
    with torch.no_grad():
        m(torch.randint(0, 50, (2, 8)))
    for branch in ("attn", "mlp"):  # RMSNorm with unit scale: every token's branch output has RMS 1
        rms = seen[branch].pow(2).mean(-1).sqrt()
        assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3), branch


def test_gated_attention_multiplies_the_sdpa_output_by_a_sigmoid_gate_of_the_input():
    torch.manual_seed(0)
    for gate, width_out in (("sigmoid", 32), ("sigmoid-head", 2)):
        m = sp.build_model("pre-ln", sets=[f"attn_gate={gate}"], depth=1, width=32, heads=2, vocab_size=50, context=8)
        attn = m.blocks[0].attn
        assert attn.w_gate.weight.shape == (width_out, 32)
        x = torch.randn(2, 8, 32)
        with torch.no_grad():
            gated = attn(x)
            w = attn.w_gate
            attn.w_gate = None
            plain = attn(x)  # y W^O without the gate; W^O is dense: undo it to compare the gate itself
            attn.w_gate = w
            g = torch.sigmoid(w(x))
            g = g if g.shape[-1] == 32 else g.repeat_interleave(16, -1)
            y_plain, y_gated = plain @ torch.linalg.inv(attn.proj.weight), gated @ torch.linalg.inv(attn.proj.weight)
        assert torch.allclose(y_gated, y_plain * g, atol=1e-4)


def test_value_residual_mixes_the_first_blocks_values_into_every_later_block():
    idx = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    out = {}
    for lam in (None, 1.0, 0.5):
        torch.manual_seed(0)
        sets = [] if lam is None else [f"value_residual={lam}"]
        with torch.no_grad():
            out[lam] = sp.build_model("pre-ln", sets=sets, depth=3, width=32, heads=2, vocab_size=50, context=8)(idx)[0]
    assert torch.equal(out[None], out[1.0]) and not torch.allclose(out[None], out[0.5])

def test_dyt_and_derf_scale_the_embeddings_by_one_learnable_sqrt_width_as_dyts_llama_recipe():
    """jiachenzhu/DyT other_tasks/LLaMA: x = embed(idx) * shared_scale, shared_scale a parameter initialised at sqrt(d)."""
    idx = torch.randint(0, 50, (2, 8))
    for block in ("dyt", "derf"):
        torch.manual_seed(0)
        m = sp.build_model(block, depth=1, width=64, heads=2, vocab_size=50, context=8)
        torch.manual_seed(0)
        plain = sp.build_model(block, sets=["embed_scale=none"], depth=1, width=64, heads=2, vocab_size=50, context=8)
        with torch.no_grad():
            assert torch.allclose(m.embed(idx), 8.0 * plain.embed(idx))
        assert m.embed.scale.requires_grad and m.embed.scale.ndim == 0 and plain.embed.scale is None
    assert sp.get_spec("pre-ln").embed_scale == "none"


def test_final_norm_replaces_only_the_norm_before_the_head():
    m = sp.build_model("dyt", sets=["final_norm=rms"], depth=2, width=32, heads=2, vocab_size=50, context=8)
    assert isinstance(m.ln_f, torch.nn.RMSNorm) and all(isinstance(b.ln_1, DyT) for b in m.blocks)
    assert isinstance(sp.build_model("sas-p-nonorm", depth=1, width=32, heads=2, vocab_size=50, context=8).ln_f, torch.nn.LayerNorm)


@pytest.mark.parametrize("sets, needle", [(["norm=batch"], "dyt, derf"), (["norm_position=sphere", "parallel=true"], "peri"),
                                           (["sphere_alpha=0"], "sphere_alpha"), (["value_residual=2"], "value_residual"),
                                           (["attn_gate=tanh"], "sigmoid-head"), (["norm_alpha=0"], "norm_alpha"),
                                           (["norm_position=mix"], "peri"), (["embed_scale=2"], "sqrt-width"),
                                           (["final_norm=none"], "auto, rms")])
def test_bad_values_are_one_line(sets, needle):
    with pytest.raises(SigpropError) as e:
        sp.get_spec("pre-ln", sets)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("block", ["dyt", "derf", "peri-ln", "gated", "ngpt"])
def test_each_successor_preset_trains_at_ci_scale(block, tmp_path):
    run = train(block, get_config("ci"), out=tmp_path / block, quiet=True)
    assert run.status == "done" and math.isfinite(run.summary["final_eval_loss"])
    assert block in sp.BLOCKS


@pytest.mark.slow
@pytest.mark.parametrize("block, sets", VARIANTS)
def test_kernel_maps_predict_the_measured_cosines_at_large_width(block, sets):
    """With W^Q = 0 every map is exact in the wide limit: DyT / Derf / the gate by 2-D Gaussian quadrature, Peri-LN's
    output norm by normalising the branch's diagonal, value residual by mixing the first block's value kernel."""
    cfg = ModelConfig(depth=4, width=1024, heads=8, vocab_size=500, context=32)
    idx = torch.randint(0, 500, (3, 32), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    m = sp.build_model(block, cfg, sets=[*sets, "query_init=0"])
    p = sp.measure(m, idx, kernels=True)
    th = propagate(m.spec, cfg, torch.from_numpy(p.kernels[0]))
    assert th.exact
    measured, predicted = p.value("cos_mean").to_numpy(), th.metrics(("cos_mean",)).value.to_numpy()
    assert np.abs(measured - predicted).max() < 0.05


def test_ngpt_keeps_states_and_weight_rows_on_the_unit_sphere_through_training(tmp_path):
    """nGPT (Loshchilov et al. 2025): unit-norm hidden states after every block, and the trainer renormalises the
    weight rows after every optimiser step (the final weights of a 20-step run still have unit rows everywhere)."""
    from sigprop.runs import RunDir
    from sigprop.training.checkpoint import load_checkpoint

    cfg = get_config("ci")
    train("ngpt", cfg, out=tmp_path / "ngpt", quiet=True)
    m = sp.build_model("ngpt", depth=cfg.depth, width=cfg.width, heads=cfg.heads, vocab_size=cfg.vocab_size, context=cfg.seq_len)
    m.load_state_dict(load_checkpoint(RunDir(tmp_path / "ngpt").checkpoint)["model"])
    rows = {"wte": (m.embed.wte.weight, 1), "w_q": (m.blocks[0].attn.w_q.weight, 1), "w_out": (m.blocks[1].mlp.w_out.weight, 0)}
    for name, (w, dim) in rows.items():
        assert torch.allclose(w.norm(dim=dim), torch.ones(w.shape[1 - dim]), atol=1e-5), name
    assert not torch.allclose(m.blocks[0].alpha_attn, torch.full_like(m.blocks[0].alpha_attn, cfg.width**-0.5))  # it trained
    p = sp.measure(m, torch.randint(0, cfg.vocab_size, (2, 16)), activations=True)
    for layer, x in p.activations.items():
        assert torch.allclose(x.norm(dim=-1), torch.ones(x.shape[:-1]), atol=1e-4), layer



def test_ngpt_keeps_its_mlp_nonlinear_with_s_v_sqrt_d():
    """With unit weight rows and a unit state every pre-activation is a cosine, RMS 1/sqrt(d), where GELU (nGPT's SiLU)
    is nearly linear; nGPT's s_v sqrt(d) (Sec. 2.4.2, init 1) brings the pre-activations to RMS ~1 at any width."""
    for width in (64, 256):
        m = sp.build_model("ngpt", sets=["activation=gelu"], seed=0, depth=1, width=width, heads=4, vocab_size=100, context=32)
        seen = {}
        m.blocks[0].mlp.w_in.register_forward_hook(lambda mod, i, o: seen.setdefault("w_in", o))
        with torch.no_grad():
            m(torch.randint(0, 100, (4, 32)))
        mlp, cosine = m.blocks[0].mlp, seen["w_in"]
        assert cosine.pow(2).mean().sqrt() == pytest.approx(width**-0.5, rel=0.15)
        pre = cosine * mlp.s_v.detach() * width**0.5
        assert pre.pow(2).mean().sqrt() == pytest.approx(1.0, rel=0.15)
        with torch.no_grad():  # and the forward feeds GELU exactly that pre-activation, not the bare cosine
            x = torch.nn.functional.normalize(torch.randn(2, 8, width), dim=-1)
            assert torch.allclose(mlp(x), mlp.w_out(torch.nn.functional.gelu(mlp.w_in(x) * width**0.5)), atol=1e-6)
            assert not torch.allclose(mlp(x), mlp.w_out(torch.nn.functional.gelu(mlp.w_in(x))), atol=1e-4)
        assert "blocks.0.mlp.s_v" in dict(m.named_parameters())


def test_the_pre_ln_baseline_skips_the_raw_stream_not_its_norm():
    """nGPT's public baseline had x = norm(x) + attn(norm(x)) (NVIDIA/ngpt issue #1: it made the baseline diverge at
    larger LRs and inflated nGPT's speed-up). Pre-LN here is x + attn(norm(x)): with both branches' output weights at
    zero a block returns its input exactly, at any scale of the stream."""
    m = sp.build_model("pre-ln", seed=0, depth=2, width=32, heads=4, vocab_size=64, context=16)
    with torch.no_grad():
        for b in m.blocks:
            b.attn.proj.weight.zero_()
            b.mlp.w_out.weight.zero_()
        x = 10 * torch.randn(2, 8, 32)
        assert torch.equal(m.blocks[0](x), x)


# ------------------------------------------------------------------------------------------------
# The failure modes recent theory names: entropy collapse, the spectral gap, the exponents
# ------------------------------------------------------------------------------------------------


def test_entropy_ratio_is_one_for_uniform_and_zero_for_one_hot_attention():
    from sigprop.probes.metrics import entropy_ratio

    causal = torch.tril(torch.ones(6, 6))
    uniform = (causal / causal.sum(-1, keepdim=True))[None, None]
    one_hot = torch.eye(6)[None, None]
    assert float(entropy_ratio(uniform)[0, 0]) == pytest.approx(1.0)
    assert float(entropy_ratio(one_hot)[0, 0]) == pytest.approx(0.0)
    full = torch.full((1, 1, 4, 4), 0.25)
    assert float(entropy_ratio(full, torch.tensor([[True, True, True, True]]))[0, 0]) == pytest.approx(1.0)


def test_singular_ratio_and_layer_exponent():
    from sigprop.probes.metrics import layer_exponent, singular_ratio

    assert float(singular_ratio(torch.eye(5)[None, None])[0, 0]) == pytest.approx(1.0)
    assert float(singular_ratio(torch.full((1, 1, 5, 5), 0.2))[0, 0]) == pytest.approx(0.0, abs=1e-12)
    assert layer_exponent([1.0, 0.5, 0.25, 0.125]) == pytest.approx(math.log(0.5))
    assert math.isnan(layer_exponent([0.0, 1.0]))


def test_attention_probes_record_entropy_ratio_and_spectral_ratio_and_analyze_the_exponents():
    m = sp.build_model("pre-ln", sets=["query_init=1"], depth=2, width=64, heads=4, vocab_size=100, context=32)
    rows = sp.measure(m, torch.randint(0, 100, (2, 32)), attention=True).metrics
    for name in ("attn_entropy_ratio", "attn_sv_ratio"):
        r = rows[rows.metric == name]
        assert set(r["head"]) == {0, 1, 2, 3} and r.value.between(0, 1).all(), name
    a = sp.analyze("skipless,sas", depth=6, width=128, heads=4, seq_len=32, batch=2, data="random", grad=True, progress=False)
    s = a.summary().set_index("block")
    assert s.loc["skipless", "angle_exponent"] < -0.5  # 1 - cos_mean shrinks by e^-0.5 per layer or faster: collapse
    assert abs(s.loc["sas", "angle_exponent"]) < 0.05  # SAS keeps the embedding's geometry
    assert s["gradient_exponent"].notna().all()


def test_theory_predicts_the_attention_entropy_and_the_trainability_map_draws_both_collapses(tmp_path):
    """Entropy from the sampled softmax equals the measured one within 0.05 per block; the qk-scale-residual diagram
    finds rank collapse at small query scale and entropy collapse at large, measured points inside the tolerance."""
    cfg = ModelConfig(depth=4, width=256, heads=4, vocab_size=500, context=32)
    idx = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    for q in (0.02, 2.0):
        torch.manual_seed(0)
        m = sp.build_model("pre-ln", cfg, sets=["beta_ff=0", f"query_init={q}"])
        p = sp.measure(m, idx, kernels=True, attention=True)
        th = propagate(m.spec, cfg, torch.from_numpy(p.kernels[0]))
        measured = p.per_layer.query("metric == 'attn_entropy_ratio'").sort_values("layer").value.to_numpy()
        assert np.abs(measured - np.array(th.entropy)).max() < 0.05, q
    ph = sp.phase("qk-scale-residual", width=256, heads=4, seq_len=32, data="random", vocab_size=500, progress=False,
                  measure_points=[(0.005, 1.0), (5.0, 1.0)])
    g = ph.grid.pivot_table(index=["x", "y"], columns="metric", values="value")
    small, large = g.xs(0.005, level="x"), g.xs(5.0, level="x")
    assert (small.attn_entropy_ratio > 0.95).all()  # small logits: uniform attention, no entropy collapse ...
    assert (small.cos_mean[small.index >= 1] > 0.9).all() and small.cos_mean.loc[0.125] < small.cos_mean.loc[1.0] - 0.3  # ... rank collapse unless the skip dominates
    assert (large.attn_entropy_ratio < 0.15).all() and (large.cos_mean < 0.6).all()  # entropy collapse, tokens apart
    assert ph.agrees
    ph.plot(tmp_path)
    assert (tmp_path / "qk-scale-residual.png").exists()


def test_an_unknown_softmax_treatment_is_one_line_before_any_work():
    from sigprop.studies.theory import propagate_batch

    m = sp.build_model("pre-ln", depth=1, width=16, heads=2, vocab_size=20, context=4)
    for call in (lambda: propagate(m.spec, m.config, torch.eye(4), softmax="exact"),
                 lambda: propagate_batch(m.spec, m.config, torch.randn(2, 4, 16), softmax="exact")):
        with pytest.raises(SigpropError, match="unknown softmax treatment 'exact'; accepted: sampled, uniform"):
            call()


def test_derf_kernel_is_the_closed_form_arcsin_kernel_at_any_variance():
    """At s = 0 Derf's map is closed-form: equal to the quadrature where that is exact (std 1) and to a Monte-Carlo
    estimate at std 30, where the 48-node quadrature is percents off."""
    from sigprop.kernels.maps import quadrature_kernel

    d = Derf(4, 0.5, 0.0)
    K = torch.tensor([[1.0, 0.6], [0.6, 1.3]], dtype=torch.float64)[None]
    torch.testing.assert_close(d.kernel(K)[0], quadrature_kernel(K, d.phi, 48), atol=1e-13, rtol=0)
    K = 900 * K
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2_000_000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(K[0]).T
    mc = (d.phi(u[:, 0]) * d.phi(u[:, 1])).mean()
    assert abs(float(d.kernel(K)[0][0, 0, 1]) - float(mc)) < 2e-3
