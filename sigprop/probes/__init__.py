"""Signal-propagation probes: metrics of kernels (pure functions), forward-hook capture, trained gains."""

from sigprop.probes.capture import DEFAULT_METRICS, LAYER_METRICS, Probe, Target, default_layers, measure, probe, resolve_layers
from sigprop.probes.gains import gains
from sigprop.probes.metrics import (
    KERNEL_METRICS,
    SPECTRAL_METRICS,
    attention_entropy,
    cos_mean,
    cosine_kernel,
    eff_rank,
    eff_rank_of,
    eigenvalues,
    kernel,
    kurtosis,
    norm_sq,
    rank1_residual,
    stable_rank,
    stable_rank_of,
)

__all__ = [
    "DEFAULT_METRICS",
    "KERNEL_METRICS",
    "LAYER_METRICS",
    "SPECTRAL_METRICS",
    "Probe",
    "Target",
    "attention_entropy",
    "cos_mean",
    "cosine_kernel",
    "default_layers",
    "eff_rank",
    "eff_rank_of",
    "eigenvalues",
    "gains",
    "kernel",
    "kurtosis",
    "measure",
    "norm_sq",
    "probe",
    "rank1_residual",
    "resolve_layers",
    "stable_rank",
    "stable_rank_of",
]
