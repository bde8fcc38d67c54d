"""U-SPA / E-SPA (He et al. 2023): the attention at init maps each target kernel onto the next one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sigprop.blocks import ModelConfig, build_model, get_spec
from sigprop.blocks.spa import check_nonnegative, espa_kernel, spa_attention, target_kernel, uspa_kernel
from sigprop.errors import SigpropError
from sigprop.probes import cos_mean, measure
from sigprop.studies.theory import propagate

TARGETS = {"u-spa": 0.8, "e-spa": 0.05}


@pytest.mark.parametrize("attention", ["u-spa", "e-spa"])
def test_attention_maps_target_onto_next_target(attention):
    T, depth, target = 24, 6, TARGETS[attention]
    for layer in range(depth):
        A, gamma, D = spa_attention(attention, target, layer, depth, T)
        before, after = (target_kernel(attention, target, l, depth, T) for l in (layer, layer + 1))
        torch.testing.assert_close(A @ before @ A.T, after, atol=1e-10, rtol=1e-10)
        assert torch.equal(A, A.tril()) and (A >= 0).all()  # causal and a valid softmax up to the rescaling
        P = torch.softmax(gamma, dim=-1)
        torch.testing.assert_close(D[:, None] * P, A, atol=1e-12, rtol=1e-10)
    # the target's correlations grow layer by layer, from the identity
    cos = [float(cos_mean(target_kernel(attention, target, l, depth, T)[None])) for l in range(depth + 1)]
    assert cos[0] == 0 and all(b > a for a, b in zip(cos, cos[1:]))


def test_shorter_sequences_use_the_top_left_block():
    A32 = spa_attention("e-spa", 0.05, 2, 6, 32)[0]
    A16 = spa_attention("e-spa", 0.05, 2, 6, 16)[0]
    torch.testing.assert_close(A32[:16, :16], A16)


def test_target_kernels_and_errors():
    assert uspa_kernel(0.3, 3)[0, 1] == pytest.approx(0.3) and uspa_kernel(0.3, 3)[1, 1] == 1
    assert espa_kernel(0.5, 4)[0, 3] == pytest.approx(np.exp(-1.5))
    with pytest.raises(SigpropError, match="spa_rho"):
        get_spec("u-spa").replace(spa_rho=1.0)
    with pytest.raises(SigpropError, match="spa_gamma"):
        get_spec("e-spa").replace(spa_gamma=0.0)
    # correlations falling with depth would need negative attention weights
    falling = torch.linalg.cholesky(uspa_kernel(0.2, 8)) @ torch.linalg.inv(torch.linalg.cholesky(uspa_kernel(0.6, 8)))
    with pytest.raises(SigpropError, match="negative"):
        check_nonnegative(falling)


@pytest.mark.parametrize("width", [256, pytest.param(1024, marks=pytest.mark.slow)])
@pytest.mark.parametrize("block", ["u-spa", "e-spa"])
def test_measured_kernel_follows_target_at_large_width(block, width):
    depth, T = 12, 64
    cfg = ModelConfig(depth=depth, width=width, heads=8, vocab_size=512, context=T)
    model = build_model(block, cfg, seed=0)
    idx = torch.randint(0, 512, (2, T), generator=torch.Generator().manual_seed(1))
    K = {l: torch.from_numpy(k) for l, k in measure(model, idx, kernels=True).kernels.items()}
    spec = model.spec
    target = spec.spa_rho if block == "u-spa" else spec.spa_gamma
    meas = np.array([float(cos_mean(K[l]).mean()) for l in range(depth + 1)])
    want = np.array([float(cos_mean(target_kernel(block, target, l, depth, T)[None])) for l in range(depth + 1)])
    assert np.abs(meas - want).max() < 0.05, (meas, want)
    assert meas[-1] > 0.2  # the schedule really moved the kernel (not a no-op)
    th = propagate(spec, cfg, K[0])
    assert th.exact
    pred = np.array([float(cos_mean(k).mean()) for k in th.kernels])
    assert np.abs(meas - pred).max() < 0.02  # theory is exact in the attention; the MLP adds finite-width noise


@pytest.mark.parametrize("block", ["u-spa", "e-spa"])
def test_fast_path_matches_explicit_and_runs_in_bf16(block):
    model = build_model(block, depth=3, width=64, heads=4, context=32, vocab_size=100, seed=0)
    idx = torch.randint(0, 100, (2, 32), generator=torch.Generator().manual_seed(0))
    fast = model(idx)[0]
    for b in model.blocks:
        b.attn.explicit = True
    torch.testing.assert_close(model(idx)[0], fast, atol=1e-5, rtol=1e-5)
    for b in model.blocks:
        b.attn.explicit = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(idx)[0]
    assert (low.float() - fast).abs().max() < 0.05
