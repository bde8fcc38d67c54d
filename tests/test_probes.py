"""Probes on sigprop and foreign models: layers, values vs hand computation, attention, cleanup, gains."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from sigprop import SigpropError, build_model
from sigprop.blocks.attention import Attention
from sigprop.blocks.spec import beta_ff_for_depth
from sigprop.probes import KERNEL_METRICS, gains, kernel, kurtosis, measure, probe

SIZES = dict(depth=3, width=32, heads=4, vocab_size=64, context=16)


def tokens(B: int = 3, T: int = 12, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def hand_outputs(model, idx: torch.Tensor, key_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Layer 0 (embedding) and every block output, computed without any probe."""
    with torch.no_grad():
        xs = [model.embed(idx)]
        for block in model.blocks:
            xs.append(block(xs[-1], key_mask))
    return xs


def hooks(model: nn.Module) -> dict[str, list]:
    """Every forward (pre-)hook on every module, by module name."""
    return {n: [*m._forward_hooks.values(), *m._forward_pre_hooks.values()] for n, m in model.named_modules()}


def no_hooks(model: nn.Module) -> bool:
    return not any(hooks(model).values())


@pytest.mark.parametrize("block", ["pre-ln", "sas-p"])
def test_probe_matches_hand_computation(block: str) -> None:
    model = build_model(block, seed=0, **SIZES)
    idx = tokens()
    p = measure(model, idx, kernels=True, activations=True, metrics=(*KERNEL_METRICS, "kurtosis"))
    L = SIZES["depth"]
    assert p.layers == {0: "blocks.0.hook_resid_pre", **{i + 1: f"blocks.{i}.hook_resid_post" for i in range(L)}}
    df = p.metrics
    assert list(df.columns) == ["layer", "module", "metric", "head", "value"]
    assert sorted(df.layer.unique()) == list(range(L + 1))
    assert (df["head"] == -1).all() and len(df) == (L + 1) * 6
    assert len(p.per_sequence) == len(df) * idx.shape[0] and sorted(p.per_sequence.seq.unique()) == [0, 1, 2]
    for layer, x in enumerate(hand_outputs(model, idx)):
        torch.testing.assert_close(p.activations[layer], x)
        K = kernel(x)
        np.testing.assert_allclose(p.kernels[layer], K.numpy(), rtol=1e-6, atol=1e-9)
        for name, fn in KERNEL_METRICS.items():
            per_seq = p.per_sequence.query("layer == @layer and metric == @name").sort_values("seq").value.to_numpy()
            np.testing.assert_allclose(per_seq, fn(K).numpy(), rtol=1e-6, atol=1e-9, err_msg=f"{name} layer {layer}")
            assert p.value(name, layer) == pytest.approx(fn(K).mean().item(), rel=1e-6, abs=1e-9)
        assert p.value("kurtosis", layer) == pytest.approx(kurtosis(x).mean().item(), rel=1e-6)


def test_defaults_keep_only_metrics() -> None:
    model = build_model("pre-ln", seed=0, **SIZES)
    p = measure(model, tokens())
    assert p.kernels == {} and p.attention == {} and p.activations == {}
    assert set(p.metrics.metric) == set(KERNEL_METRICS)


def test_sas_attention_is_exactly_identity_at_init() -> None:
    model = build_model("sas", seed=0, **SIZES)
    B, T, H = 2, 10, SIZES["heads"]
    p = measure(model, tokens(B, T), attention=True, metrics=("cos_mean",))
    assert sorted(p.attention) == [1, 2, 3]
    for A in p.attention.values():
        assert A.shape == (B, H, T, T)
        assert np.array_equal(A, np.broadcast_to(np.eye(T, dtype=A.dtype), A.shape))
    # Zero queries: the softmax part is the causal uniform matrix C, whose row i has entropy log i.
    ent = p.metrics.query("metric == 'attn_entropy'")
    assert sorted(ent["head"].unique()) == list(range(H)) and sorted(ent.layer.unique()) == [1, 2, 3]
    assert set(ent.module) == {f"blocks.{i}.attn.hook_pattern" for i in range(3)}
    expected = np.mean(np.log(np.arange(1, T + 1)))
    np.testing.assert_allclose(ent.value.to_numpy(), expected, rtol=1e-6)
    assert all(not m.explicit for m in model.modules() if isinstance(m, Attention))


def test_rank_collapse_skipless_vs_sas() -> None:
    """The science: naive skipless tokens align with depth; SAS keeps the embedding geometry at init."""
    sizes = dict(depth=12, width=256, heads=4, vocab_size=256, context=16)
    idx = tokens(2, 16, vocab=256, seed=1)
    cos = {b: measure(build_model(b, seed=0, **sizes), idx, metrics=("cos_mean",)).value("cos_mean") for b in ("skipless", "sas")}
    deep = cos["skipless"].index >= 6
    assert (cos["skipless"][deep] > cos["sas"][deep] + 0.5).all()
    assert cos["skipless"].loc[12] > 0.95
    assert abs(cos["sas"].loc[12] - cos["sas"].loc[0]) < 0.02


@pytest.mark.parametrize("block", ["pre-ln", "sas", "v-skipinit", "skipless"])
def test_probing_leaves_logits_unchanged(block: str) -> None:
    model = build_model(block, seed=0, **SIZES)
    idx = tokens()
    with torch.no_grad():
        plain, _ = model(idx)
        with probe(model, attention=True, kernels=True):
            probed, _ = model(idx)
        after, _ = model(idx)
    torch.testing.assert_close(probed, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, plain)  # fast path restored


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch RMSNorm under autocast
def test_probe_under_bf16_autocast() -> None:
    """Training probes run inside autocast: metrics stay float64, bf16 attention matrices come back as float32."""
    model = build_model("sas", seed=0, **SIZES)
    idx = tokens()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), probe(model, attention=True, activations=True) as p:
        model(idx)
    assert all(A.dtype == np.float32 for A in p.attention.values())
    for layer, x in p.activations.items():
        assert p.value("eff_rank", layer) == pytest.approx(KERNEL_METRICS["eff_rank"](kernel(x)).mean().item(), rel=1e-9)
    assert np.isfinite(p.metrics.value).all()


def test_hooks_removed_and_explicit_restored_when_forward_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("sas", seed=0, **SIZES)
    model.blocks[0].attn.explicit = True  # a user's own setting must come back as it was

    def boom(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    monkeypatch.setattr(model.blocks[1].mlp, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        with probe(model, attention=True) as p:
            assert not no_hooks(model) and model.blocks[2].attn.explicit
            model(tokens())
    assert no_hooks(model)
    assert [b.attn.explicit for b in model.blocks] == [True, False, False]
    # What ran before the error is kept: layers 0, 1 and the attention of block 2 (its MLP raised).
    assert set(p.metrics.query("metric == 'cos_mean'").layer) == {0, 1}
    assert set(p.metrics.query("metric == 'attn_entropy'").layer) == {1, 2}


def test_encoder_padding_is_excluded() -> None:
    """Padded encoder sequences give the same per-sequence metrics as the unpadded sequences alone."""
    model = build_model("sas", seed=0, **SIZES, kind="encoder")
    idx = tokens(2, 12)
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[0, 7:] = False
    p = measure(model, idx, key_mask=key_mask, metrics=(*KERNEL_METRICS, "kurtosis"), attention=True)
    alone = measure(model, idx[:1, :7], metrics=(*KERNEL_METRICS, "kurtosis"), attention=True).per_sequence
    padded = p.per_sequence.query("seq == 0").drop(columns="seq").reset_index(drop=True)
    pd.testing.assert_frame_equal(padded, alone.drop(columns="seq"), rtol=1e-4, atol=1e-6)
    unmasked = measure(model, idx, metrics=("eff_rank",)).per_sequence.query("seq == 0 and layer == 0").value.item()
    assert unmasked != pytest.approx(p.per_sequence.query("seq == 0 and layer == 0 and metric == 'eff_rank'").value.item(), rel=1e-3)


def test_layer_selection() -> None:
    model = build_model("pre-ln", seed=0, **SIZES)
    idx = tokens()
    assert measure(model, idx, layers="blocks.*").layers == {1: "blocks.0", 2: "blocks.1", 3: "blocks.2"}
    assert measure(model, idx, layers=r"blocks\.[02]").layers == {1: "blocks.0", 3: "blocks.2"}
    sub = measure(model, idx, layers=[model.blocks[1].mlp, "ln_f"])
    assert sub.layers == {0: "blocks.1.mlp", 1: "ln_f"}
    named = measure(model, idx, layers={7: "blocks.2.hook_mid"}, metrics="cos_mean,norm_sq")
    assert set(named.metrics.layer) == {7} and set(named.metrics.metric) == {"cos_mean", "norm_sq"}


def test_compiled_model_is_looked_through() -> None:
    model = build_model("pre-ln", seed=0, **SIZES)
    idx = tokens(2, 8)
    compiled = torch.compile(model, backend="eager")  # no C compiler needed
    p, plain = measure(compiled, idx), measure(model, idx)
    assert p.layers == plain.layers
    pd.testing.assert_frame_equal(p.metrics, plain.metrics, rtol=1e-5, atol=1e-7)
    assert no_hooks(model)


def test_repeated_forwards_accumulate_sequences() -> None:
    model = build_model("pre-ln", seed=0, **SIZES)
    with torch.no_grad(), probe(model, kernels=True, metrics=("cos_mean",)) as p:
        model(tokens(2, seed=1))
        model(tokens(3, seed=2))
    assert sorted(p.per_sequence.query("layer == 0").seq) == [0, 1, 2, 3, 4]
    assert p.kernels[2].shape == (5, 12, 12)


def test_foreign_module_needs_layers() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    with pytest.raises(SigpropError, match="layers="):
        probe(net)
    x = torch.randn(2, 5, 8)
    p = measure(net, x, layers=["0", "2"], activations=True)
    assert p.layers == {0: "0", 1: "2"}
    torch.testing.assert_close(p.activations[1], net(x))


def test_bad_input_is_one_line_error() -> None:
    model = build_model("pre-ln", seed=0, **SIZES)
    for kwargs, needle in [
        (dict(metrics=("cos_mean", "entropy")), "'entropy'"),
        (dict(layers="decoder.*"), "'decoder.*'"),
        (dict(key_mask=torch.ones(12, dtype=torch.bool)), "key_mask"),
    ]:
        with pytest.raises(SigpropError, match=needle) as err:
            measure(model, tokens(), **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(SigpropError, match=r"\(3, 12\)"):
        measure(model, tokens(), key_mask=torch.ones(3, 10, dtype=torch.bool))
    assert no_hooks(model)


def test_measure_restores_training_mode() -> None:
    model = build_model("pre-ln", seed=0, **SIZES).train()
    measure(model, tokens())
    assert all(m.training for m in model.modules())


def test_hf_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    idx = tokens(2, 9, vocab=100)
    with torch.no_grad():
        hidden = model(idx, output_hidden_states=True).hidden_states  # the last one is after ln_f
    before = hooks(model)  # transformers installs hooks of its own (output capturing); ours must not stay
    p = measure(model, idx)
    assert p.layers == {0: "blocks.0.hook_resid_pre", 1: "blocks.0.hook_resid_post", 2: "blocks.1.hook_resid_post"}
    assert len(p.metrics) == 3 * len(KERNEL_METRICS)
    for layer in (0, 1):
        for name, fn in KERNEL_METRICS.items():
            assert p.value(name, layer) == pytest.approx(fn(kernel(hidden[layer])).mean().item(), rel=1e-6), name
    assert measure(model, idx, layers="transformer.h.*").layers == {1: "transformer.h.0", 2: "transformer.h.1"}
    key_mask = torch.ones(2, 9, dtype=torch.bool)
    key_mask[0, 6:] = False  # right padding: passed on as attention_mask, left out of the metrics
    padded = measure(model, idx, key_mask=key_mask).per_sequence.query("seq == 0").drop(columns="seq").reset_index(drop=True)
    alone = measure(model, idx[:1, :6]).per_sequence.drop(columns="seq")
    pd.testing.assert_frame_equal(padded, alone, rtol=1e-4, atol=1e-6)
    with pytest.raises(SigpropError, match="attention=True"):  # a bare block stack has no probabilities (issue 29: said
        measure(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), torch.randn(2, 3, 4), attention=True)  # once it ran)
    assert hooks(model) == before


def test_gains_of_sas_at_init() -> None:
    L, H = 8, 4
    df = gains(build_model("sas", seed=0, depth=L, width=32, heads=H, vocab_size=64, context=16))
    assert list(df.columns) == ["layer", "metric", "head", "value"]
    assert sorted(df.layer.unique()) == list(range(1, L + 1))
    for name in ("alpha", "beta", "gamma"):
        rows = df[df.metric == name]
        assert len(rows) == L * H and sorted(rows["head"].unique()) == list(range(H))
        assert (rows.value == 1.0).all()
    beta_ff = df[df.metric == "beta_ff"]
    assert len(beta_ff) == L and (beta_ff["head"] == -1).all()
    np.testing.assert_allclose(beta_ff.value, 0.1 * math.sqrt(18 / L))
    assert beta_ff_for_depth(L) == pytest.approx(0.1 * math.sqrt(18 / L))
    assert (df[df.metric == "alpha_sa"].value == 0).all() and (df[df.metric == "beta_sa"].value == 1).all()
    # SAS footnote 6: only the first block keeps a reparameterised W^V (alpha_v = beta_v = 1).
    assert df[df.metric == "beta_v/alpha_v"].layer.tolist() == [1]
    assert "beta_p/alpha_p" not in set(df.metric)


def test_gains_reparam_ratios_and_training() -> None:
    model = build_model("sas", seed=0, sets=["value=reparam", "proj=reparam", "value_init=identity", "proj_init=identity",
                                             "beta_v=0.2", "beta_p=0.2", "trainable=value,proj,attn,beta_ff"], **SIZES)
    df = gains(model)
    for m in ("v", "p"):
        ratio = df[df.metric == f"beta_{m}/alpha_{m}"]
        assert ratio.layer.tolist() == [1, 2, 3]
        np.testing.assert_allclose(ratio.value, 0.2)
        assert {f"alpha_{m}", f"beta_{m}"} <= set(df.metric)
    with torch.no_grad():  # "training" moves trainable gains; gains() must read the current values
        model.blocks[1].attn.proj.alpha.fill_(0.5)
        model.blocks[1].attn.beta[2] = 3.0
        model.blocks[2].beta_ff.fill_(0.7)
    df = gains(model)
    get = lambda layer, metric, head=-1: df.query("layer == @layer and metric == @metric and head == @head").value.item()  # noqa: E731
    assert get(2, "beta_p/alpha_p") == pytest.approx(0.4)
    assert get(2, "beta", 2) == 3.0 and get(2, "beta", 1) == 1.0
    assert get(3, "beta_ff") == pytest.approx(0.7)
    with pytest.raises(SigpropError, match="Sequential"):
        gains(nn.Sequential(nn.Linear(2, 2)))


def test_the_attention_mask_a_model_is_called_with_excludes_padding_like_key_mask():
    """Issue 31: `with probe(m): m(idx, attention_mask=mask)` counted padded tokens in every stream metric."""
    from tests.hf_tiny import VOCAB, tiny_models

    model = tiny_models()["bert"]()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 6:] = 0
    with torch.no_grad(), probe(model) as seen:
        model(idx, attention_mask=mask)
    with torch.no_grad(), probe(model, key_mask=mask.bool()) as given:
        model(idx, attention_mask=mask)
    with torch.no_grad(), probe(model) as unmasked:
        model(idx)
    pd.testing.assert_frame_equal(seen.metrics, given.metrics)
    assert not np.allclose(seen.value("cos_mean").to_numpy(), unmasked.value("cos_mean").to_numpy())
    with pytest.warns(UserWarning, match="padded tokens count"), torch.no_grad(), probe(model):
        model(idx, attention_mask=mask[:, None, None, :].float())


def test_backward_probes_do_not_take_padded_positions_as_labels():
    from sigprop.probes import lm_loss
    from tests.hf_tiny import VOCAB, tiny_models

    model = tiny_models()["bert"]()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 6:] = False
    want = model(input_ids=idx, attention_mask=mask.long(), labels=idx.masked_fill(~mask, -100)).loss
    assert torch.allclose(lm_loss(model, idx, mask), want)
