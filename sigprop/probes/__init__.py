"""Signal-propagation probes: metrics of kernels (pure functions), canonical probe points of any model,
forward-hook capture, trained gains."""

from sigprop.probes.backward import GRAD_STREAM_METRICS, WEIGHT_METRICS, lm_loss
from sigprop.probes.capture import DEFAULT_METRICS, LAYER_METRICS, Probe, measure, probe
from sigprop.probes.layers import Target, default_layers, resolve_layers
from sigprop.probes.gains import gains
from sigprop.probes.updates import UpdateRatios, training_rows
from sigprop.probes.points import ADAPTERS, Adapter, Point, ProbePoints, Weight, point_name, probe_points
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
    token_norm,
)

__all__ = [
    "ADAPTERS",
    "GRAD_STREAM_METRICS",
    "WEIGHT_METRICS",
    "lm_loss",
    "Adapter",
    "Point",
    "ProbePoints",
    "Weight",
    "point_name",
    "probe_points",
    "DEFAULT_METRICS",
    "KERNEL_METRICS",
    "LAYER_METRICS",
    "SPECTRAL_METRICS",
    "Probe",
    "Target",
    "UpdateRatios",
    "training_rows",
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
    "token_norm",
]
