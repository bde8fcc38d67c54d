"""The probes' metrics from activations (issue 30) equal the kernel path's within 1e-6 relative, on fixed tensors:
every default metric, masks and padding, degenerate sequences, both sides of the Gram, whole probes and gradients."""

from __future__ import annotations

import pytest
import torch

from sigprop import build_model
from sigprop.probes import KERNEL_METRICS, measure
from sigprop.probes import direct
from sigprop.probes.direct import (chunk_size, cos_mean_x, gram, layer_metrics, reference_metrics, spectrum,
                                   using_reference)
from sigprop.probes.metrics import cos_mean, eigenvalues, kernel

RTOL, ATOL = 1e-6, 1e-12  # ATOL: values that are 0 on both paths up to rounding
#: The kernel path's rank1_residual is sqrt((tr K - 1^T K 1 / n) / tr K): once tokens have collapsed the difference
#: cancels to a few float64 ulps, so its value is only exact to ~sqrt(eps) = 1.5e-8 absolute (the new path centres
#: the tokens first and has no cancellation); above 1e-5 the 1e-6 relative tolerance holds.
RANK1_ATOL = 1e-7
NAMES = (*KERNEL_METRICS, "kurtosis")


def fixed(B: int, T: int, d: int, seed: int) -> torch.Tensor:
    """Float32 activations with the geometries probes meet: generic, collapsed, low rank, outlier features, zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, d, generator=g)
    u = torch.randn(d, generator=g)
    x[1] = u + 1e-3 * x[1]  # nearly collapsed: cos_mean ~ 1, eff_rank ~ 1
    x[2] = torch.randn(T, 3, generator=g) @ torch.randn(3, d, generator=g) + 1e-4 * x[2]  # rank 3 plus noise
    x[3, :, :2] *= 50  # two outlier features
    x[4, 1] = 0  # a zero token
    x[5] = 0  # an all-zero sequence
    return x


def fixed_mask(B: int, T: int, seed: int) -> torch.Tensor:
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) > 0.3
    mask[0] = True
    mask[6, 1:] = False  # one real token: no pairs
    mask[7] = False  # no real token
    return mask


def assert_same(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> None:
    for name in old:
        atol = RANK1_ATOL if name == "rank1_residual" else ATOL
        torch.testing.assert_close(new[name], old[name], rtol=RTOL, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("T, d", [(24, 8), (8, 24), (16, 16), (48, 40)])
@pytest.mark.parametrize("masked", [False, True])
def test_every_default_metric_equals_the_kernel_path(T: int, d: int, masked: bool) -> None:
    x = fixed(8, T, d, seed=T + d)
    mask = fixed_mask(8, T, seed=T) if masked else None
    new, _ = layer_metrics(x, mask, NAMES)
    with reference_metrics():
        old, _ = layer_metrics(x, mask, NAMES)
    assert set(new) == set(old) == set(NAMES)
    assert all(torch.isfinite(v).all() for v in new.values())
    assert_same(new, old)


def test_the_smaller_gram_has_the_kernels_nonzero_eigenvalues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "GRAM_BLOCKED_FROM", 1)  # the blockwise product, as at T, d >= 512
    for T, d in [(30, 10), (10, 30)]:
        x = fixed(6, T, d, seed=1).double()
        assert gram(x).shape[-1] == min(T, d)
        torch.testing.assert_close(gram(x), x.mT @ x if d < T else x @ x.mT)
        lam = spectrum(x)
        ref = eigenvalues(kernel(x))[..., -min(T, d):]
        torch.testing.assert_close(lam, ref, rtol=1e-9, atol=1e-12 * float(ref.max()))


def test_cos_mean_without_the_kernel() -> None:
    x, mask = fixed(8, 20, 12, seed=3), fixed_mask(8, 20, seed=3)
    torch.testing.assert_close(cos_mean_x(x, mask), cos_mean(kernel(x), mask), rtol=RTOL, atol=ATOL)


def test_chunks_bound_the_float64_working_set() -> None:
    assert chunk_size(1024, 768) * 8 * (1024 * 768 + 2 * 768**2) <= 32 * 2**20
    assert chunk_size(10**5, 10**4) == 1  # never 0
    x = fixed(8, 16, 8, seed=4)
    whole, _ = layer_metrics(x, None, NAMES)
    parts = [layer_metrics(x[i : i + 3], None, NAMES)[0] for i in range(0, 8, 3)]
    assert_same(whole, {k: torch.cat([p[k] for p in parts]) for k in NAMES})


def test_reference_switch_is_scoped() -> None:
    assert not using_reference()
    with reference_metrics():
        assert using_reference()
    assert not using_reference()


@pytest.mark.parametrize("block", ["pre-ln", "skipless"])
def test_a_whole_probe_equals_the_kernel_path(block: str) -> None:
    """measure() on padded sequences, with kernels kept and a backward pass: every row the same as before."""
    model = build_model(block, seed=0, depth=3, width=16, heads=2, vocab_size=50, context=24, kind="encoder")
    idx = torch.randint(0, 50, (5, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(5, 24, dtype=torch.bool)
    mask[1, 18:] = False
    mask[3, 5:] = False
    kw = dict(key_mask=mask, kernels=True, metrics=NAMES, grad=True)
    new = measure(model, idx, **kw)
    with reference_metrics():
        old = measure(model, idx, **kw)
    a, b = new.per_sequence, old.per_sequence
    assert a[["layer", "metric", "seq"]].equals(b[["layer", "metric", "seq"]])
    assert {"grad_cos_mean", "eff_rank", "kurtosis"} <= set(a.metric)
    for metric in a.metric.unique():  # skipless collapses: rank1_residual falls to ~1e-7 at layer 3
        pick = a.metric == metric
        atol = RANK1_ATOL if metric == "rank1_residual" else ATOL
        torch.testing.assert_close(torch.tensor(a.value[pick].values), torch.tensor(b.value[pick].values), rtol=RTOL,
                                   atol=atol, msg=lambda m: f"{metric}: {m}")
    for layer, K in old.kernels.items():
        torch.testing.assert_close(torch.tensor(new.kernels[layer]), torch.tensor(K))
