"""The models: presets match the paper, shaped attention is the identity at init, fast == explicit."""

from __future__ import annotations

import math

import pytest
import torch

import sigprop as sp
from sigprop.blocks import PRESETS, ModelConfig, build_model, get_spec, param_groups
from sigprop.blocks.attention import RUNNING_MEAN_GEMM_MAX_T, Attention, centred_values, centring_matrix
from sigprop.blocks.spec import BlockSpec, beta_ff_for_depth, parse_set
from sigprop.errors import SigpropError

SMALL = dict(depth=3, width=32, heads=4, vocab_size=97, context=16)


def captured_patterns(model, idx, key_mask=None):
    """Run the explicit path and collect every block's full attention matrix."""
    pats = []
    hooks = []
    for b in model.blocks:
        b.attn.explicit = True
        hooks.append(b.attn.hook_matrix.register_forward_hook(lambda m, i, o: pats.append(o.detach())))
    try:
        logits, _ = model(idx, key_mask=key_mask)
    finally:
        for h in hooks:
            h.remove()
        for b in model.blocks:
            b.attn.explicit = False
    return pats, logits


@pytest.mark.parametrize("name", ["sas", "sas-p", "sas-p-nonorm", "v-skipinit"])
@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_shaped_attention_is_exactly_identity_at_init(name, kind):
    model = build_model(name, ModelConfig(**SMALL, kind=kind), seed=0)
    idx = torch.randint(0, 97, (2, 16))
    pats, _ = captured_patterns(model, idx)
    assert len(pats) == 3
    eye = torch.eye(16).expand(2, 4, 16, 16)
    for p in pats:
        assert torch.equal(p, eye)  # exactly, not approximately


def test_naive_skipless_attention_is_not_identity():
    model = build_model("skipless", ModelConfig(**SMALL), seed=0)
    pats, _ = captured_patterns(model, torch.randint(0, 97, (2, 16)))
    assert not torch.allclose(pats[0], torch.eye(16).expand_as(pats[0]), atol=1e-2)


def test_sas_attention_sub_block_is_the_identity_map():
    model = build_model("sas", ModelConfig(**SMALL), seed=0)
    x = torch.randn(2, 16, 32)
    for b in model.blocks:  # layer 1 has the trainable first-layer value I + 0, later ones no W^V
        b.attn.explicit = True
        assert torch.equal(b.attn(x), x)
        b.attn.explicit = False
        torch.testing.assert_close(b.attn(x), x, atol=1e-6, rtol=1e-6)  # fast path: SDPA vs running mean


def test_sas_and_sas_p_agree_at_init_up_to_norm_eps():
    cfg = ModelConfig(depth=4, width=64, heads=4, vocab_size=97, context=16)
    idx = torch.randint(0, 97, (3, 16))
    a, _ = build_model("sas", cfg, seed=1)(idx)
    b, _ = build_model("sas-p", cfg, seed=1)(idx)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # ... and not because everything is trivially the same: Pre-LN differs.
    c, _ = build_model("pre-ln", cfg, seed=1)(idx)
    assert (a - c).abs().max() > 1e-2


def _random_attention(kind: str, causal: bool, dtype) -> Attention:
    spec = BlockSpec(attention=kind, query_init=0.5, value="dense", proj="dense", trainable=("attn",))
    attn = Attention(spec, width=32, heads=4, causal=causal).to(dtype)
    with torch.no_grad():  # random per-head gains so no term cancels
        for name in ("alpha", "beta", "gamma"):
            if hasattr(attn, name):
                getattr(attn, name).uniform_(0.3, 1.5)
    return attn


@pytest.mark.parametrize("kind", ["shaped", "value_skipinit", "softmax"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_fast_and_explicit_attention_agree_in_value_and_gradient(kind, causal, padded, dtype, tol):
    torch.manual_seed(0)
    attn = _random_attention(kind, causal, dtype)
    x = torch.randn(3, 12, 32, dtype=dtype)
    key_mask = None
    if padded:
        key_mask = torch.ones(3, 12, dtype=torch.bool)
        key_mask[0, 9:] = False
        key_mask[2, 5:] = False

    def run(explicit: bool):
        attn.zero_grad()
        xi = x.clone().requires_grad_(True)
        attn.explicit = explicit
        y = attn(xi, key_mask)
        w = key_mask[..., None].to(dtype) if key_mask is not None else 1.0
        (y * w).pow(2).sum().backward()
        grads = [p.grad.clone() for p in attn.parameters()]
        return y, xi.grad, grads

    y_fast, gx_fast, gp_fast = run(False)
    y_exp, gx_exp, gp_exp = run(True)
    real = key_mask[..., None] if key_mask is not None else torch.ones(1, dtype=torch.bool)
    torch.testing.assert_close(y_fast * real, y_exp * real, atol=tol, rtol=tol)
    torch.testing.assert_close(gx_fast, gx_exp, atol=tol * 10, rtol=tol * 10)
    for a, b in zip(gp_fast, gp_exp):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol * 10)


@pytest.mark.parametrize("T", [5, RUNNING_MEAN_GEMM_MAX_T, RUNNING_MEAN_GEMM_MAX_T + 3])
def test_running_mean_routes_equal_the_centring_matrix(T):
    """The causal C V is a GEMM up to RUNNING_MEAN_GEMM_MAX_T and a cumsum beyond: both are C V, in value and
    gradient, and the shaped attention built on them matches its explicit T x T path on either side."""
    torch.manual_seed(0)
    v = torch.randn(2, T, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, T, 6, dtype=torch.float64)
    (got,) = torch.autograd.grad(centred_values(v, True, None), v, g)
    C = centring_matrix(T, causal=True, dtype=torch.float64)
    torch.testing.assert_close(centred_values(v, True, None), C @ v, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got, C.T @ g, atol=1e-12, rtol=1e-12)
    attn = _random_attention("shaped", True, torch.float64)
    x = torch.randn(1, T, 32, dtype=torch.float64)
    fast = attn(x)
    attn.explicit = True
    torch.testing.assert_close(fast, attn(x), atol=1e-12, rtol=1e-12)


def test_centring_matrix_is_softmax_of_zero_logits():
    T = 7
    causal = torch.softmax(torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf), -1)
    assert torch.equal(centring_matrix(T, causal=True), causal)
    torch.testing.assert_close(centring_matrix(T, causal=False), torch.full((T, T), 1 / T))
    mask = torch.tensor([[True, True, False, False, False, False, False]])
    C = centring_matrix(T, causal=False, key_mask=mask)
    torch.testing.assert_close(C[0, 0, :, :2], torch.full((T, 2), 0.5))
    assert C[0, 0, :, 2:].abs().sum() == 0


def _block_weights(model) -> int:
    return sum(p.numel() for p in model.blocks[-1].parameters() if p.requires_grad)


@pytest.mark.parametrize("d", [64, 128])
def test_block_parameter_counts_follow_the_paper(d):
    cfg = ModelConfig(depth=2, width=d, heads=4, vocab_size=97, context=16)
    # Pre-LN: W^Q, W^K, W^V, W^P (4d²) + MLP (8d²) + two RMSNorm scales (2d)
    assert _block_weights(build_model("pre-ln", cfg)) == 12 * d * d + 2 * d
    # SAS: W^Q, W^K (2d²) + MLP (8d²) + two norms (2d) + per-head alpha, beta, gamma (3H) + beta_sa, alpha_ff, beta_ff
    assert _block_weights(build_model("sas", cfg)) == 10 * d * d + 2 * d + 3 * 4 + 3
    # SAS-P: one shared norm, no alpha_ff
    assert _block_weights(build_model("sas-p", cfg)) == 10 * d * d + d + 3 * 4 + 2


def test_whole_model_parameters_at_paper_scale():
    """paper.md §1.5: 18 x 768, V = 50K, learned 1024 positions -> Pre-LN 166.7M, SAS 146.1M (-13%)."""
    cfg = ModelConfig(depth=18, width=768, heads=12, vocab_size=50000, context=1024)
    with torch.device("meta"):
        pre = build_model("pre-ln", cfg).num_params()
        sas = build_model("sas", cfg).num_params()
        sasp = build_model("sas-p", cfg).num_params()
    assert pre == pytest.approx(166.7e6, rel=2e-3)
    assert sas == pytest.approx(146.1e6, rel=2e-3)
    assert 1 - sas / pre == pytest.approx(0.124, abs=0.01)
    assert sasp < sas


def test_asymptotic_fraction_removed_is_one_sixth():
    d = 64
    cfg = ModelConfig(depth=2, width=d, heads=4, vocab_size=97, context=16)
    pre, sas = _block_weights(build_model("pre-ln", cfg)), _block_weights(build_model("sas-p", cfg))
    assert 1 - sas / pre == pytest.approx(1 / 6, abs=0.01)


def test_fixed_buffers_are_not_counted():
    cfg = ModelConfig(depth=2, width=32, heads=4, vocab_size=97, context=16)
    m = build_model(get_spec("v-skipinit").replace(value="reparam", value_init="orthogonal", proj="reparam", proj_init="identity"), cfg)
    buffers = sum(b.numel() for b in m.buffers())
    assert buffers >= 2 * 32 * 32  # the fixed orthogonal W_init per layer
    assert m.num_params() == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_every_preset_trains_one_step(name, kind):
    torch.manual_seed(0)
    model = build_model(name, ModelConfig(**SMALL, kind=kind))
    idx = torch.randint(0, 97, (4, 16))
    targets = torch.randint(0, 97, (4, 16))
    key_mask = None
    if kind == "encoder":
        targets[:, ::2] = -100
        key_mask = torch.ones(4, 16, dtype=torch.bool)
        key_mask[1, 10:] = False
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    _, loss = model(idx, targets, key_mask)
    loss.backward()
    opt.step()
    _, loss2 = model(idx, targets, key_mask)
    assert torch.isfinite(loss) and torch.isfinite(loss2)
    assert loss2 < loss  # one step on the same batch lowers its loss
    assert math.log(97) - 1.0 < loss.item() < math.log(97) + 1.0  # near-uniform at init


@pytest.mark.parametrize("name", ["v-skipinit", "sas", "sas-p", "sas-p-nonorm"])
def test_skipless_gains_are_trainable_and_never_decayed(name):
    model = build_model(name, ModelConfig(**SMALL))
    named = dict(model.named_parameters())
    for key in ("blocks.1.beta_sa", "blocks.1.beta_ff", "blocks.1.attn.alpha", "blocks.1.attn.beta", "blocks.1.attn.gamma"):
        assert key in named and named[key].requires_grad, key
    if name != "v-skipinit":
        assert "blocks.0.attn.value.alpha" in named and "blocks.0.attn.value.delta" in named
        assert not any(k.startswith("blocks.1.attn.value") for k in named)  # later layers: no W^V at all
    groups = param_groups(model, 0.1)
    no_decay = {id(p) for p in groups[1]["params"]}
    decay = {id(p) for p in groups[0]["params"]}
    for k, p in named.items():
        is_gain_norm_bias = p.ndim < 2
        assert (id(p) in no_decay) == is_gain_norm_bias, k
        assert (id(p) in decay) == (not is_gain_norm_bias), k
    assert groups[1]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1


def test_pre_ln_gains_are_fixed():
    model = build_model("pre-ln", ModelConfig(**SMALL))
    assert not any("beta" in k or "alpha" in k for k, _ in model.named_parameters())


def test_presets_match_the_paper():
    sas, sasp, nonorm, vsi = (PRESETS[n] for n in ("sas", "sas-p", "sas-p-nonorm", "v-skipinit"))
    for s in (sas, sasp, nonorm, vsi):
        assert s.attention == "shaped" and (s.alpha, s.beta, s.gamma) == (1, 1, 1) and s.query_init == 0
        assert s.skipless
    assert (sas.value, sas.proj, sas.first_layer_value) == ("identity", "identity", True)
    assert sasp.parallel and sasp.alpha_comb == 0 and sasp.norm == "rms"
    assert nonorm.norm == "none" and nonorm.first_layer_norm
    assert (vsi.value, vsi.value_init, vsi.proj_init) == ("dense", "orthogonal", "orthogonal")
    assert not PRESETS["pre-ln"].skipless and PRESETS["skipless"].skipless
    assert PRESETS["skipless"].attention == "softmax" and PRESETS["parallel"].parallel


def test_beta_ff_depth_rule():
    assert beta_ff_for_depth(18) == pytest.approx(0.1)
    assert beta_ff_for_depth(72) == pytest.approx(0.05)
    assert beta_ff_for_depth(2) == pytest.approx(0.3)
    model = build_model("sas", ModelConfig(**{**SMALL, "depth": 8}))
    assert model.blocks[0].beta_ff.item() == pytest.approx(0.1 * math.sqrt(18 / 8))
    model = build_model("sas", ModelConfig(**SMALL), sets=["beta_ff=0.2"])
    assert model.blocks[0].beta_ff.item() == pytest.approx(0.2)


def test_first_layer_norm_kept_without_norms():
    model = build_model("sas-p-nonorm", ModelConfig(**SMALL))
    assert isinstance(model.blocks[0].ln_1, torch.nn.LayerNorm)
    assert all(isinstance(b.ln_1, torch.nn.Identity) for b in model.blocks[1:])


def test_knob_overrides_and_errors():
    s = get_spec("sas", ["beta_ff=0.2", "norm=layer", "trainable=beta_ff,attn", "parallel=true"])
    assert (s.beta_ff, s.norm, s.trainable, s.parallel) == (0.2, "layer", ("beta_ff", "attn"), True)
    assert get_spec("sas").replace(beta_ff=0.3).beta_ff == 0.3
    assert parse_set("beta-ff=auto") == ("beta_ff", None)
    cases = [
        (lambda: get_spec("sass"), "unknown block 'sass'; accepted: pre-ln"),
        (lambda: get_spec("sas", ["foo=1"]), "unknown knob 'foo'"),
        (lambda: get_spec("sas", ["beta_ff"]), "expected knob=value"),
        (lambda: get_spec("sas", ["beta_ff=x"]), "bad value 'x' for knob 'beta_ff'"),
        (lambda: get_spec("sas", ["norm=batch"]), "unknown norm 'batch'; accepted: rms, layer, dyt, derf, none"),
        (lambda: get_spec("sas").replace(attention="linear"), "unknown attention 'linear'"),
        (lambda: ModelConfig(width=100, heads=12), "width 100 is not divisible by heads 12"),
        (lambda: ModelConfig(depth=0), "depth must be positive"),
        (lambda: get_spec("sas", ["trainable=foo"]), "unknown trainable gain 'foo'"),
    ]
    for make, msg in cases:
        with pytest.raises(SigpropError, match=None) as e:
            make()
        assert msg in str(e.value) and "\n" not in str(e.value)


def test_sequence_longer_than_context_is_a_clear_error():
    model = build_model("sas", ModelConfig(**SMALL))
    with pytest.raises(SigpropError, match="exceeds the model's context 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_public_api():
    assert set(sp.BLOCKS) == set(PRESETS)
    assert isinstance(sp.build_model("sas", depth=2, width=32, heads=4, vocab_size=50, context=8), sp.Transformer)


@pytest.mark.parametrize("mode", ["last_block", "all_blocks"])
@pytest.mark.parametrize("matrix", ["dense", "reparam"])
def test_tied_orthogonal_values_and_projections_compose_to_identity(mode, matrix):
    """App. C (Fig. 15): LL-tied and all-tied inits make prod_l W^V_l W^P_l = I at init, with every matrix still
    orthogonal; all-tied makes each block's W^V W^P = I, LL-tied only the product (independent draws before)."""
    from sigprop.blocks.attention import init_matrix

    spec = get_spec("v-skipinit").replace(value=matrix, proj=matrix, value_init="orthogonal", proj_init="orthogonal",
                                          tie_valproj_init=mode)
    model = build_model(spec, depth=4, width=32, heads=4, vocab_size=50, seed=0)
    eye, prod = torch.eye(32), torch.eye(32)
    per_block = []
    for b in model.blocks:
        v, p = init_matrix(b.attn.value), init_matrix(b.attn.proj)
        assert torch.allclose(p @ p.T, eye, atol=1e-5) and torch.allclose(v @ v.T, eye, atol=1e-5)
        per_block.append(torch.allclose(v @ p, eye, atol=1e-5))
        prod = prod @ v @ p
    assert torch.allclose(prod, eye, atol=1e-4)
    assert all(per_block) if mode == "all_blocks" else not any(per_block[:-1])
    untied = build_model(spec.replace(tie_valproj_init="none"), depth=4, width=32, heads=4, vocab_size=50, seed=0)
    assert not torch.allclose(torch.linalg.multi_dot([init_matrix(m) for b in untied.blocks for m in (b.attn.value, b.attn.proj)]), eye, atol=1e-2)


def test_tying_needs_orthogonal_values_and_projections():
    with pytest.raises(SigpropError, match="tie_valproj_init='all_blocks' ties orthogonal values and projections"):
        get_spec("pre-ln").replace(tie_valproj_init="all_blocks")
    with pytest.raises(SigpropError, match="unknown tie_valproj_init 'both'"):
        get_spec("v-skipinit").replace(tie_valproj_init="both")
