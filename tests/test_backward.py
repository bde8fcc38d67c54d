"""Backward signal propagation: dL/dX per layer, weight-gradient norms, and their infinite-width theory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sigprop import SigpropError, build_model
from sigprop.probes import cos_mean, kernel, measure, token_norm
from sigprop.studies.theory import propagate_grad


def tokens(B: int, T: int, vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def by_layer(p, metric: str):
    return p.metrics.query("metric == @metric").groupby("layer").value.mean()


def test_backward_probe_matches_autograd_and_leaves_grad_untouched() -> None:
    model = build_model("pre-ln", seed=0, depth=3, width=32, heads=4, vocab_size=64, context=16)
    idx = tokens(2, 9, 64)
    p = measure(model, idx, grad=True, activations=True)
    assert all(q.grad is None for q in model.parameters())  # autograd.grad: the model's .grad stays empty
    # By hand: dL/dX at every block output, and dL/dW_Q of block 1.
    xs = []

    def keep(module, inputs, out) -> None:
        out.retain_grad()
        xs.append(out)

    handles = [b.register_forward_hook(keep) for b in model.blocks]
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for h in handles:
        h.remove()
    for l, x in enumerate(xs, start=1):
        torch.testing.assert_close(p.gradients[l], x.grad)
        assert by_layer(p, "grad_norm")[l] == pytest.approx(token_norm(x.grad).mean().item(), rel=1e-6)
        assert by_layer(p, "grad_cos_mean")[l] == pytest.approx(cos_mean(kernel(x.grad)).mean().item(), rel=1e-6, abs=1e-9)
    wq = p.metrics.query("metric == 'grad_W_Q' and layer == 2").value.item()
    assert wq == pytest.approx(model.blocks[1].attn.w_q.weight.grad.norm().item(), rel=1e-6)
    mlp = p.metrics.query("metric == 'grad_mlp' and layer == 3").value.item()
    want = torch.cat([model.blocks[2].mlp.w_in.weight.grad.flatten(), model.blocks[2].mlp.w_out.weight.grad.flatten()]).norm()
    assert mlp == pytest.approx(want.item(), rel=1e-6)


def test_naive_skipless_starves_queries_and_keys_sas_does_not() -> None:
    """Noci et al. 2022: once tokens collapse, dL/dW^Q and dL/dW^K vanish against dL/dW^V; SAS keeps them."""
    sizes = dict(depth=8, width=128, heads=4, vocab_size=256, context=64)
    idx = tokens(4, 33, 256)
    naive = measure(build_model("skipless", seed=0, **sizes), idx, grad=True)
    sas = measure(build_model("sas", seed=0, **sizes), idx, grad=True)
    qv = by_layer(naive, "grad_W_Q") / by_layer(naive, "grad_W_V")
    kv = by_layer(naive, "grad_W_K") / by_layer(naive, "grad_W_V")
    assert qv[8] < 0.1 * qv[1] and kv[8] < 0.1 * kv[1]  # vanishing with depth
    assert (np.diff(qv.to_numpy()) < 0.5 * qv.to_numpy()[:-1]).all()  # never recovers by more than half
    # SAS has no W^V (identity values): its query gradients hold up against the MLP's at every depth.
    sas_q = by_layer(sas, "grad_W_Q") / by_layer(sas, "grad_mlp")
    naive_q = by_layer(naive, "grad_W_Q") / by_layer(naive, "grad_mlp")
    assert sas_q.max() / sas_q.min() < 1.5
    assert (sas_q[4:] > 100 * naive_q[4:]).all()
    assert by_layer(naive, "cos_mean")[8] > 0.95


@pytest.mark.parametrize("block,sets", [("sas", ()), ("sas-p", ()), ("v-skipinit", ()), ("sas", ("beta_ff=1.0", "activation=gelu")),
                                        ("u-spa", ("query_init=0",))])
def test_gradient_theory_matches_at_width_1024(block: str, sets: tuple[str, ...]) -> None:
    """W^Q = 0: the infinite-width gradient kernels predict ||dL/dX_l|| and the MLP weight gradients within 10%."""
    model = build_model(block, seed=0, sets=sets, depth=4, width=1024, heads=8, vocab_size=512, context=32)
    p = measure(model, tokens(2, 17, 512), grad=True, activations=True)
    theory = propagate_grad(model.spec, model.config, p.activations[0], p.gradients[4]).metrics()
    for metric in ("grad_norm", "grad_mlp"):
        pred = theory[theory.metric == metric].set_index("layer").value
        meas = by_layer(p, metric).loc[pred.index]
        np.testing.assert_allclose(pred.to_numpy(), meas.to_numpy(), rtol=0.1, err_msg=metric)


def test_gradient_theory_refuses_where_it_is_not_exact() -> None:
    model = build_model("skipless", seed=0, depth=2, width=32, heads=4, vocab_size=64, context=16)
    x = torch.randn(1, 4, 32)
    with pytest.raises(SigpropError, match="W\\^Q = 0") as err:
        propagate_grad(model.spec, model.config, x, x)
    assert "\n" not in str(err.value)


def test_gradient_theory_refuses_point_wise_norms_and_gates() -> None:
    """Its norm rule (1 / rms) is RMS/Layer norm's: DyT or a gate would be predicted wrongly, so they are refused."""
    for block in ("dyt", "gated"):
        model = build_model(block, seed=0, sets=("query_init=0",), depth=2, width=32, heads=4, vocab_size=64, context=16)
        x = torch.randn(1, 4, 32)
        with pytest.raises(SigpropError, match="RMS/Layer norm or none"):
            propagate_grad(model.spec, model.config, x, x)


def test_analyze_grad_tables_theory_and_figure(tmp_path) -> None:
    import sigprop as sp

    a = sp.analyze(["skipless", "sas"], depth=4, width=64, heads=4, seq_len=17, batch=2, data="random", vocab_size=128,
                   grad=True, progress=False)
    sas, naive = a.grad_table("sas"), a.grad_table("skipless")
    assert list(sas.layer) == [0, 1, 2, 3, 4] and "theory_grad_norm" in sas and "theory_grad_norm" not in naive
    np.testing.assert_allclose(sas.theory_grad_norm, sas.grad_norm, rtol=0.15)  # exact in the limit; width 64 here
    paths = a.save(tmp_path / "out")
    assert (tmp_path / "out" / "gradients.png") in paths
    with pytest.raises(SigpropError, match="--grad"):
        sp.analyze("sas", depth=2, width=32, heads=4, seq_len=8, batch=1, data="random", vocab_size=64, progress=False).grad_table("sas")
