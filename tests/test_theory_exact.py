"""Theory's numbers at the edges (issue 31): the GELU kernel (and its derivative kernel, which the gradient theory
uses) against a high-order reference at pre-activation std 0.3 ... 8 and any correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sigprop.theory import _quadrature_kernel, activation_kernel, derivative_kernel, gelu_kernel

TOLERANCE = 1e-9  # relative


def gelu(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def dgelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def reference(s1: float, s2: float, rho: float, f, n: int = 600) -> float:
    """E[f(u) f(v)], u = s1 z1, v = s2 (rho z1 + sqrt(1 - rho^2) z2): a dense 2-D composite Gauss-Legendre rule on
    [-10, 10]^2, 4n nodes per axis clustered near 0 (the 2-D rule independent of the one under test)."""
    x, w = np.polynomial.legendre.leggauss(n)
    segments = [(-10.0, -1.0), (-1.0, 0.0), (0.0, 1.0), (1.0, 10.0)]
    z = np.concatenate([(b - a) / 2 * x + (a + b) / 2 for a, b in segments])
    q = np.concatenate([(b - a) / 2 * w for a, b in segments]) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    z, q = torch.tensor(z), torch.tensor(q)
    u, v = s1 * z[:, None], s2 * (rho * z[:, None] + math.sqrt(max(1 - rho * rho, 0.0)) * z[None, :])
    return float(q @ (f(u) * f(v)) @ q)


@pytest.mark.parametrize("std", [0.3, 1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("rho", [-0.5, 0.3, 0.9, 0.999])
def test_gelu_kernels_match_a_high_order_reference_at_any_scale(std, rho):
    s1, s2 = std, 0.8 * std
    K = torch.tensor([[[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]]], dtype=torch.float64)
    for got, f in ((activation_kernel(K, "gelu"), gelu), (derivative_kernel(K, "gelu"), dgelu)):
        for i, j, (a, b, r) in ((0, 1, (s1, s2, rho)), (0, 0, (s1, s1, 1.0))):
            assert float(got[0, i, j]) == pytest.approx(reference(a, b, r, f), rel=TOLERANCE, abs=1e-15), (i, j)


def test_the_fixed_24_node_rule_it_replaced_fails_at_large_variance():
    """Why the map changed: the old 2-D Gauss-Hermite rule is off by percents at std 8 (and 2e-2 at depth 6 against
    neural-tangents with weight std sqrt(2))."""
    s = 8.0
    K = torch.tensor([[[s * s, 0.9 * s * s], [0.9 * s * s, s * s]]], dtype=torch.float64)
    old = float(_quadrature_kernel(K, gelu, 24)[0, 0, 1])
    assert abs(old / reference(s, s, 0.9, gelu) - 1) > 1e-3


def test_gelu_kernel_is_symmetric_and_batched():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 6, 40, generator=g, dtype=torch.float64) * torch.tensor([0.2, 1.0, 5.0], dtype=torch.float64)[:, None, None]
    K = X @ X.transpose(-1, -2) / 40
    G = gelu_kernel(K)
    assert G.shape == K.shape and torch.allclose(G, G.transpose(-1, -2), rtol=1e-9, atol=1e-12)


def test_the_validation_script_runs_and_its_rows_hold(capsys):
    """benchmarks/validate.py, which docs/validated.md quotes, at a small width: every row a number within reach."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "validate.py"
    spec = importlib.util.spec_from_file_location("validate", path)
    validate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validate)
    assert validate.outlier_row() < 1e-12 and validate.padding_row() < 1e-12 and validate.sdpa_row() < 1e-6
    assert validate.gelu_row(stds=(0.3, 8.0), rhos=(0.9,), n=300) < 1e-9
    assert validate.batch_corr_row(width=256) < 0.1
