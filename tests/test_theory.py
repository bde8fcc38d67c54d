"""Theory vs measurement: the infinite-width kernel recursion predicts what the probes see at init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sigprop.blocks import ModelConfig, build_model, get_spec
from sigprop.probes import cos_mean, kernel, measure, norm_sq
from sigprop.kernels.maps import activation_kernel, relu_kernel
from sigprop.studies.theory import propagate

T, B = 32, 4


def measured_and_predicted(block, width: int, depth: int = 8, seed: int = 0, kind: str = "decoder", sets=()):
    cfg = ModelConfig(depth=depth, width=width, heads=max(1, width // 64), vocab_size=256, context=T, kind=kind)
    model = build_model(block, cfg, sets=sets, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    idx = torch.randint(0, 256, (B, T), generator=g)
    idx[:, T // 2 :] = idx[:, : T // 2]  # repeated tokens give the input kernel some structure
    p = measure(model, idx, kernels=True)
    K = {layer: torch.from_numpy(k) for layer, k in p.kernels.items()}
    th = propagate(model.spec, cfg, K[0], seed=seed)
    meas = np.array([float(cos_mean(K[l]).mean()) for l in sorted(K)])
    pred = np.array([float(cos_mean(k).mean()) for k in th.kernels])
    meas_n = np.array([float(norm_sq(K[l]).mean()) for l in sorted(K)])
    pred_n = np.array([float(norm_sq(k).mean()) for k in th.kernels])
    return meas, pred, meas_n, pred_n, th


def _gaussian_pairs(K: torch.Tensor, n: int = 400_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    L = torch.linalg.cholesky(K)
    return torch.randn(n, K.shape[0], generator=g, dtype=torch.float64) @ L.T


@pytest.mark.parametrize("activation,slope", [("relu", 0.0), ("leaky_relu", 0.2), ("gelu", 0.0), ("linear", 0.0)])
def test_activation_kernels_match_monte_carlo(activation, slope):
    K = torch.tensor([[1.3, 0.4, -0.2], [0.4, 0.8, 0.1], [-0.2, 0.1, 2.0]], dtype=torch.float64)
    u = _gaussian_pairs(K)
    phi = {
        "relu": torch.relu,
        "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, slope),
        "gelu": torch.nn.functional.gelu,
        "linear": lambda x: x,
    }[activation]
    mc = (phi(u).T @ phi(u)) / u.shape[0]
    pred = activation_kernel(K[None], activation, slope)[0]
    torch.testing.assert_close(pred, mc, atol=1e-2, rtol=2e-2)


def test_relu_kernel_known_values():
    # identical unit inputs: E[relu(u)^2] = 1/2; orthogonal: 1/(2 pi)
    assert relu_kernel(torch.ones(1, 2, 2, dtype=torch.float64))[0, 0, 1] == pytest.approx(0.5)
    assert relu_kernel(torch.eye(2, dtype=torch.float64)[None])[0, 0, 1] == pytest.approx(1 / (2 * math.pi))


@pytest.mark.parametrize("block", ["pre-ln", "skipless", "v-skipinit", "sas", "sas-p", "sas-p-nonorm", "parallel", "post-ln"])
def test_theory_matches_measurement_at_width_1024(block):
    meas, pred, meas_n, pred_n, _ = measured_and_predicted(block, width=1024)
    assert np.abs(meas - pred).max() < 0.05, (meas.round(3), pred.round(3))
    assert np.abs(meas_n[1:] / pred_n[1:] - 1).max() < 0.12


@pytest.mark.parametrize("block", ["pre-ln", "parallel"])
def test_theory_gap_shrinks_with_width(block):
    """Finite-width fluctuations shrink like 1/sqrt(d): the seed-averaged gap drops from width 64 to 1024.
    (Naive skipless is left out: it collapses to cos_mean = 1 at every width, so its gap is at the noise floor.)"""
    def gap(w: int) -> float:
        return float(np.mean([np.abs(np.subtract(*measured_and_predicted(block, width=w, seed=s)[:2])).mean() for s in range(3)]))

    gaps = {w: gap(w) for w in (64, 1024)}
    assert gaps[1024] < 0.5 * gaps[64], gaps


def test_theory_is_exact_and_flat_for_shaped_attention():
    meas, pred, meas_n, pred_n, th = measured_and_predicted("sas", width=256)
    assert th.exact and th.notes == []
    # SAS at init: attention is the identity, so only the down-weighted MLP moves the kernel.
    assert np.abs(pred - pred[0]).max() < 0.05
    assert np.abs(meas - pred).max() < 0.02


def test_naive_skipless_collapses_and_theory_says_so():
    meas, pred, *_ = measured_and_predicted("skipless", width=512)
    assert pred[-1] > 0.95 and meas[-1] > 0.95  # rank collapse: tokens (nearly) parallel
    meas_sas, pred_sas, *_ = measured_and_predicted("sas", width=512)
    assert pred_sas[-1] < 0.3 and meas_sas[-1] < 0.3


def test_identity_values_keep_the_skip_cross_term():
    """Pre-LN with identity V/P (paper Fig. 23): attention output correlates with its skip; theory keeps that term."""
    meas, pred, meas_n, pred_n, _ = measured_and_predicted("pre-ln", width=1024, sets=("value=identity", "proj=identity"))
    assert np.abs(meas - pred).max() < 0.05
    assert np.abs(meas_n[1:] / pred_n[1:] - 1).max() < 0.12


def test_encoder_theory():
    meas, pred, *_ = measured_and_predicted("skipless", width=1024, kind="encoder")
    assert np.abs(meas - pred).max() < 0.05


def test_uniform_softmax_option_and_errors():
    cfg = ModelConfig(depth=2, width=64, heads=1, vocab_size=10, context=T)
    K = kernel(torch.randn(2, T, 64))
    th = propagate(get_spec("pre-ln"), cfg, K, softmax="uniform")
    assert "small-logit" in th.notes[0]
    with pytest.raises(ValueError, match="accepted: sampled, uniform"):
        propagate(get_spec("pre-ln"), cfg, K, softmax="exact")
