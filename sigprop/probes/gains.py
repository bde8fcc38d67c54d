"""The paper's gains per layer as tidy rows (Figs. 4, 16-22): branch gains, shaped-attention
alpha/beta/gamma per head, and the Eq. 6 gains of reparameterised values/projections with their
ratios beta_v/alpha_v, beta_p/alpha_p (how far W^V, W^P have moved away from W_init)."""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from sigprop.errors import SigpropError
from sigprop.probes.layers import unwrap

COLUMNS = ["layer", "metric", "head", "value"]


def ratio(beta: float, alpha: float) -> float:
    """beta / alpha, with +-inf for alpha = 0 (nan when both are 0)."""
    if alpha == 0:
        return math.nan if beta == 0 else math.copysign(math.inf, beta)
    return beta / alpha


def _gain_rows(layer: int, metric: str, g: torch.Tensor) -> list[tuple[int, str, int, float]]:
    """A scalar gain -> one row (head -1); a per-head gain (H,) -> one row per head."""
    g = g.detach().to("cpu", torch.float64)
    if g.ndim == 0:
        return [(layer, metric, -1, float(g))]
    return [(layer, metric, h, float(v)) for h, v in enumerate(g.reshape(-1).tolist())]


def block_gains(named: dict[str, torch.Tensor], layer: int) -> list[tuple[int, str, int, float]]:
    """One block's {gain: value} as (layer, metric, head, value) rows, plus beta_v/alpha_v, beta_p/alpha_p."""
    rows = [row for name, g in named.items() for row in _gain_rows(layer, name, g)]
    for suffix in ("v", "p"):
        a, b = named.get(f"alpha_{suffix}"), named.get(f"beta_{suffix}")
        if a is not None and b is not None:
            rows.append((layer, f"beta_{suffix}/alpha_{suffix}", -1, ratio(float(b), float(a))))
    return rows


def gains(model: nn.Module) -> pd.DataFrame:
    """Tidy gains of a model that declares them (`model.probe_gains()`, as sigprop's models do):
    columns layer (1..L), metric, head (-1 if not per head), value.

    Metrics: alpha_sa | alpha_comb, beta_sa, beta_ff, alpha_ff (per block); alpha, beta, gamma (per head,
    shaped / value-skipinit attention); alpha_v, beta_v, beta_v/alpha_v and alpha_p, beta_p,
    beta_p/alpha_p where W^V / W^P are reparameterised (Eq. 6).
    """
    inner = unwrap(model)
    if not callable(getattr(inner, "probe_gains", None)):
        raise SigpropError(f"gains() needs a model that declares its gains (probe_gains(), e.g. a sigprop model); got {type(inner).__name__}")
    rows = [row for layer, named in enumerate(inner.probe_gains(), start=1) for row in block_gains(named, layer)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["value"] = frame["value"].astype(float)
    return frame
