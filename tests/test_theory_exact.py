"""Theory's numbers at the edges (issue 31): the GELU kernel (and its derivative kernel, which the gradient theory
uses) against high-order references at pre-activation std 1e-3 ... 1e4 and any correlation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate

from sigprop.kernels.maps import GELU_TOLERANCE, _zoomed_rule, activation_kernel, derivative_kernel, gelu_kernel, quadrature_kernel

TOLERANCE = GELU_TOLERANCE  # relative, the one gelu_kernel's docstring states


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


def _gelu_s(x: float) -> float:
    return x * 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _dgelu_s(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2))) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def adaptive_reference(s1: float, s2: float, rho: float, f) -> float:
    """The same expectation by scipy's adaptive quadrature, nested (outer over z1, inner over z2), each split where its
    integrand bends: z1 = 0, +-1/s1, +-4/s1 and z2 = the kink line rho z1 + c z2 = 0. No formula shared with theory."""
    c = math.sqrt(max(1 - rho * rho, 0.0))
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(z1: float) -> float:
        if c == 0:
            return f(s2 * rho * z1)
        k = -rho * z1 / c
        return integrate.quad(lambda z2: f(s2 * (rho * z1 + c * z2)) * pdf(z2), -12, 12, points=[k] if abs(k) < 12 else None,
                              epsabs=0, epsrel=1e-13, limit=400)[0]

    bends = sorted({0.0} | {sign * k / s1 for k in (1, 4, 16) for sign in (1, -1) if k / s1 < 12})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(lambda z1: f(s1 * z1) * inner(z1) * pdf(z1), -12, 12, points=bends, epsabs=0, epsrel=1e-13,
                              limit=400)[0]


def _pair(s1: float, s2: float, rho: float) -> torch.Tensor:
    return torch.tensor([[[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]]], dtype=torch.float64)


@pytest.mark.parametrize("std", [1e-3, 0.3, 1.0, 2.0, 4.0, 8.0, 32.0, 100.0])
@pytest.mark.parametrize("rho", [-0.5, 0.3, 0.9, 0.999, 1.0])
def test_gelu_kernels_match_a_2d_adaptive_reference_at_any_scale(std, rho):
    s1, s2 = std, 0.8 * std
    K = _pair(s1, s2, rho)
    for got, f in ((activation_kernel(K, "gelu"), _gelu_s), (derivative_kernel(K, "gelu"), _dgelu_s)):
        for i, j, (a, b, r) in ((0, 1, (s1, s2, rho)), (0, 0, (s1, s1, 1.0))):
            want = adaptive_reference(a, b, r, f)
            assert abs(float(got[0, i, j]) / want - 1) < TOLERANCE, (i, j, float(got[0, i, j]), want)


@pytest.mark.parametrize("std", [1e3, 1e4])
def test_gelu_kernels_outer_integral_is_resolved_at_huge_scales(std):
    """Beyond std 100 the nested 2-D reference itself loses digits (1e-6 at std 1000); the theory's inner expectation is
    exact algebra, so what is left to check is its 1-D rule, here against scipy's adaptive quadrature of the same
    integrand."""
    for rho in (-0.5, 0.3, 0.999):
        s1, s2 = std, 0.8 * std
        for derivative in (False, True):
            got = float(gelu_kernel(_pair(s1, s2, rho), derivative=derivative)[0, 0, 1])
            b2, ratio = s2 * s2 * (1 - rho * rho), rho * s2 / s1
            r = math.sqrt(1 + b2)

            def integrand(z: float) -> float:
                u = s1 * z
                a = ratio * u
                cdf, pdf = 0.5 * (1 + math.erf(a / r / math.sqrt(2))), math.exp(-(a / r) ** 2 / 2) / math.sqrt(2 * math.pi)
                if derivative:
                    return _dgelu_s(u) * (cdf + a * pdf / r**3) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
                return _gelu_s(u) * (a * cdf + b2 * pdf / r) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

            bends = [sign * k / s1 for k in (1, 4, 16, 64) for sign in (1, -1)] + [0.0]
            want = integrate.quad(integrand, -12, 12, points=sorted(bends), epsabs=0, epsrel=1e-13, limit=400)[0]
            assert abs(got / want - 1) < TOLERANCE, (rho, derivative, got, want)


def test_the_rule_keeps_its_small_size_at_common_variances():
    """The cost stays that of 3 x 32 nodes up to std 4 (sigprop's normalised presets live near 1); it grows only by a
    log-many 32-node segments beyond."""
    assert len(_zoomed_rule(0.3)[0]) == len(_zoomed_rule(4.0)[0]) == 96
    assert len(_zoomed_rule(100.0)[0]) <= 320


def test_the_fixed_24_node_rule_it_replaced_fails_at_large_variance():
    """Why the map changed: the old 2-D Gauss-Hermite rule is off by percents at std 8 (and 2e-2 at depth 6 against
    neural-tangents with weight std sqrt(2))."""
    s = 8.0
    K = torch.tensor([[[s * s, 0.9 * s * s], [0.9 * s * s, s * s]]], dtype=torch.float64)
    old = float(quadrature_kernel(K, gelu, 24)[0, 0, 1])
    assert abs(old / reference(s, s, 0.9, gelu) - 1) > 1e-3


def test_gelu_kernel_is_symmetric_and_batched():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 6, 40, generator=g, dtype=torch.float64) * torch.tensor([0.2, 1.0, 5.0], dtype=torch.float64)[:, None, None]
    K = X @ X.transpose(-1, -2) / 40
    G = gelu_kernel(K)
    assert G.shape == K.shape and torch.allclose(G, G.transpose(-1, -2), rtol=1e-9, atol=1e-12)


def test_the_validation_script_runs_and_its_rows_hold(capsys):
    """benchmarks/validate.py, which docs/validated.md quotes, through its main at a small size: the table printed, every
    row a number within reach, and the peers that are not installed named as such."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "validate.py"
    spec = importlib.util.spec_from_file_location("validate", path)
    validate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validate)
    out = validate.main(["--width", "128", "--quick"])
    assert out in capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[2].strip(" |") for line in out.splitlines()[2:]}
    assert len(rows) == 7
    gelu = rows["nested adaptive 2-D quadrature (scipy `quad`)"]
    assert float(gelu.split()[0]) < TOLERANCE and float(gelu.split("before: ")[1].rstrip(")")) > 1e-3
    assert float(rows["`key_mask=` on HF BERT"].split()[0]) == 0.0
    assert float(rows["the sequel's `report_outliers` in NumPy"].split()[0]) < 1e-12
    assert float(rows["HF Llama `output_attentions` (eager)"].split()[0]) < 1e-6
    assert float(rows["measurement at width 128"].split()[0]) < 0.2
    for peer, module in (("neural-tangents NNGP kernels", "neural_tangents"), ("TransformerLens `run_with_cache`", "transformer_lens")):
        assert (rows[peer] == "not installed") == (not validate.installed(module)), rows[peer]
