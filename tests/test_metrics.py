"""Signal-propagation metrics: exact values on known geometries, invariances, masks, batching, no NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sigprop.probes.metrics import (
    KERNEL_METRICS,
    SPECTRAL_METRICS,
    attention_entropy,
    cos_mean,
    cosine_kernel,
    eff_rank,
    eigenvalues,
    kernel,
    kurtosis,
    norm_sq,
    rank1_residual,
    stable_rank,
)

SCALE_FREE = ("cos_mean", "eff_rank", "stable_rank", "rank1_residual")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthonormal_rows(T: int, d: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(randn(d, d, seed=seed))
    return q[:T]


def test_registry_names() -> None:
    assert list(KERNEL_METRICS) == ["cos_mean", "norm_sq", "eff_rank", "stable_rank", "rank1_residual"]
    K, mask = kernel(randn(4, 6, 5, seed=2)), torch.tensor([True, True, False, True, True, False])
    for name, of_eigenvalues in SPECTRAL_METRICS.items():  # the probes' shared-eigvalsh shortcut
        torch.testing.assert_close(of_eigenvalues(eigenvalues(K, mask)), KERNEL_METRICS[name](K, mask), rtol=0, atol=0)


def test_kernel_is_float64_gram_over_width() -> None:
    x = randn(3, 5, 7).float()
    K = kernel(x)
    assert K.dtype == torch.float64 and K.shape == (3, 5, 5)
    torch.testing.assert_close(K, x.double() @ x.double().transpose(-2, -1) / 7)
    assert torch.equal(kernel(x.numpy()), K)  # numpy in, same answer


def test_identical_tokens_are_collapsed() -> None:
    v = randn(16, seed=1)
    K = kernel(v.expand(9, 16))
    assert cos_mean(K).item() == pytest.approx(1.0, abs=1e-12)
    assert eff_rank(K).item() == pytest.approx(1.0, abs=1e-9)
    assert stable_rank(K).item() == pytest.approx(1.0, abs=1e-12)
    assert rank1_residual(K).item() == pytest.approx(0.0, abs=1e-6)
    assert norm_sq(K).item() == pytest.approx(float(v @ v) / 16)


@pytest.mark.parametrize("T", [2, 5, 8])
def test_orthogonal_tokens_have_full_rank(T: int) -> None:
    q = orthonormal_rows(T, 8, seed=T)
    scales = torch.linspace(0.1, 30.0, T, dtype=torch.float64)
    assert cos_mean(kernel(q * scales[:, None])).item() == pytest.approx(0.0, abs=1e-12)  # any per-token scale
    K = kernel(3.7 * q)  # a common scale: all eigenvalues equal
    assert eff_rank(K).item() == pytest.approx(T, rel=1e-12)
    assert stable_rank(K).item() == pytest.approx(T, rel=1e-12)
    # ||X - 1 xbar^T||^2 = T - 1 for orthonormal rows scaled by c, ||X||^2 = T.
    assert rank1_residual(K).item() == pytest.approx(math.sqrt(1 - 1 / T), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(2, 10), d=st.integers(1, 12), c=st.floats(1e-3, 1e3))
def test_scale_invariance(seed: int, T: int, d: int, c: float) -> None:
    x = randn(T, d, seed=seed)
    K, Kc = kernel(x), kernel(c * x)
    for name in SCALE_FREE:
        torch.testing.assert_close(KERNEL_METRICS[name](Kc), KERNEL_METRICS[name](K), rtol=1e-7, atol=1e-9, msg=name)
    torch.testing.assert_close(norm_sq(Kc), c**2 * norm_sq(K), rtol=1e-10, atol=0)
    torch.testing.assert_close(kurtosis(c * x), kurtosis(x), rtol=1e-10, atol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 10), d=st.integers(1, 12))
def test_rank_bounds(seed: int, T: int, d: int) -> None:
    """exp(H(p)) >= 1 / max p, so 1 <= stable_rank <= eff_rank <= min(T, d); rank1_residual in [0, 1]."""
    K = kernel(randn(T, d, seed=seed))
    er, sr, r1 = eff_rank(K).item(), stable_rank(K).item(), rank1_residual(K).item()
    assert 1 - 1e-9 <= sr <= er + 1e-9 <= min(T, d) + 1e-6
    assert 0 <= r1 <= 1
    assert -1 <= cos_mean(K).item() <= 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 10), d=st.integers(1, 12))
def test_rank1_residual_matches_frobenius_formula(seed: int, T: int, d: int) -> None:
    x = randn(T, d, seed=seed) + randn(d, seed=seed + 1)  # a shared offset: far from zero residual and from 1
    direct = torch.linalg.norm(x - x.mean(0, keepdim=True)) / torch.linalg.norm(x)
    assert rank1_residual(kernel(x)).item() == pytest.approx(direct.item(), rel=1e-7, abs=1e-7)


def test_batched_equals_looped() -> None:
    x = randn(2, 3, 6, 5, seed=3)
    mask = torch.rand(2, 3, 6, generator=torch.Generator().manual_seed(0)) > 0.3
    K = kernel(x)
    for name, fn in KERNEL_METRICS.items():
        for m in (None, mask):
            batched = fn(K, m)
            assert batched.shape == (2, 3) and batched.dtype == torch.float64
            looped = torch.stack([torch.stack([fn(K[i, j], None if m is None else m[i, j]) for j in range(3)]) for i in range(2)])
            torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12, msg=name)
    torch.testing.assert_close(kurtosis(x, mask), torch.stack([torch.stack([kurtosis(x[i, j], mask[i, j]) for j in range(3)]) for i in range(2)]))


def test_mask_equals_metric_on_real_tokens_only() -> None:
    x = randn(7, 5, seed=4)
    mask = torch.tensor([True, False, True, True, False, True, False])
    K, K_real = kernel(x), kernel(x[mask])
    for name, fn in KERNEL_METRICS.items():
        assert fn(K, mask).item() == pytest.approx(fn(K_real).item(), rel=1e-10, abs=1e-12), name
        assert fn(K, mask).item() != pytest.approx(fn(K).item(), rel=1e-3), name  # the padding really mattered
    assert kurtosis(x, mask).item() == pytest.approx(kurtosis(x[mask]).item(), rel=1e-12)


def test_zero_sequences_and_zero_tokens_give_no_nan() -> None:
    K0 = kernel(torch.zeros(3, 4, 8))
    for name, fn in KERNEL_METRICS.items():
        assert torch.equal(fn(K0), torch.zeros(3, dtype=torch.float64)), name
    assert torch.equal(kurtosis(torch.zeros(3, 4, 8)), torch.zeros(3, dtype=torch.float64))
    x = randn(5, 8, seed=5)
    x[2] = 0  # one dead token
    rho = cosine_kernel(kernel(x))
    assert torch.isfinite(rho).all()
    assert torch.equal(rho[2], torch.eye(5, dtype=torch.float64)[2]) and torch.equal(rho[:, 2], torch.eye(5, dtype=torch.float64)[2])
    for fn in KERNEL_METRICS.values():
        assert torch.isfinite(fn(kernel(x))).all()
    # No real token (or only one) means no pairs: cos_mean 0 by convention, still finite.
    none = torch.zeros(5, dtype=torch.bool)
    one = torch.tensor([False, True, False, False, False])
    for fn in KERNEL_METRICS.values():
        assert torch.isfinite(fn(kernel(x), none)).all() and torch.isfinite(fn(kernel(x), one)).all()
    assert cos_mean(kernel(x), one).item() == 0.0


def test_eigenvalues_in_float64() -> None:
    """A float32 kernel with a tiny second eigenvalue: eff_rank must see it as float64 numpy does."""
    v, w = randn(64, seed=6), randn(64, seed=7)
    x = torch.stack([v, v + 1e-3 * w, v - 1e-3 * w]).float()
    K = kernel(x)
    lam = eigenvalues(K)
    assert lam.dtype == torch.float64 and (lam >= 0).all()
    np.testing.assert_allclose(lam.numpy(), np.clip(np.linalg.eigvalsh(K.numpy()), 0, None), rtol=1e-9, atol=1e-15)
    p = lam / lam.sum()
    expected = math.exp(-sum(q * math.log(q) for q in p.tolist() if q > 0))
    assert eff_rank(K).item() == pytest.approx(expected, rel=1e-12)
    assert 1.0 < eff_rank(K).item() < 1.01


def test_cosine_kernel_is_a_correlation_matrix() -> None:
    rho = cosine_kernel(kernel(randn(4, 6, 3, seed=8)))
    torch.testing.assert_close(rho, rho.transpose(-2, -1))
    assert torch.equal(rho.diagonal(dim1=-2, dim2=-1), torch.ones(4, 6, dtype=torch.float64))
    assert (rho.abs() <= 1).all()


def test_attention_entropy() -> None:
    T = 6
    C = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]  # causal uniform: row i has i keys
    torch.testing.assert_close(attention_entropy(C), torch.log(torch.arange(1, T + 1, dtype=torch.float64)))
    assert torch.equal(attention_entropy(torch.eye(T)), torch.zeros(T, dtype=torch.float64))
    A = torch.softmax(randn(2, 3, T, T, seed=9), -1)
    H = attention_entropy(A)
    assert H.shape == (2, 3, T) and (H > 0).all() and (H <= math.log(T) + 1e-12).all()


def test_kurtosis_sees_outlier_features() -> None:
    d = 16
    x = orthonormal_rows(d, d, seed=10) * 5.0  # every feature has the same RMS over the d tokens
    assert kurtosis(x).item() == pytest.approx(1.0, rel=1e-10)
    spike = torch.zeros(10, d, dtype=torch.float64)
    spike[:, 3] = randn(10, seed=11)  # one feature carries everything
    assert kurtosis(spike).item() == pytest.approx(d, rel=1e-12)
    assert kurtosis(randn(4, 10, d, seed=12)).shape == (4,)
