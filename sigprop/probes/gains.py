"""The paper's gains per layer as tidy rows (Figs. 4, 16-22): branch gains, shaped-attention
alpha/beta/gamma per head, and the Eq. 6 gains of reparameterised values/projections with their
ratios beta_v/alpha_v, beta_p/alpha_p (how far W^V, W^P have moved away from W_init)."""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from sigprop.blocks.attention import ReparamMatrix
from sigprop.blocks.block import Block
from sigprop.errors import SigpropError

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


def block_gains(block: Block, layer: int) -> list[tuple[int, str, int, float]]:
    """Every gain of one block (trained or fixed) as (layer, metric, head, value) rows."""
    names = ("alpha_comb", "beta_sa", "beta_ff") if block.spec.parallel else ("alpha_sa", "beta_sa", "alpha_ff", "beta_ff")
    rows = [row for name in names for row in _gain_rows(layer, name, getattr(block, name))]
    attn = block.attn
    for name in ("alpha", "beta", "gamma"):
        g = getattr(attn, name, None)
        if isinstance(g, torch.Tensor):
            rows += _gain_rows(layer, name, g)
    for suffix, matrix in (("v", attn.value), ("p", attn.proj)):
        if isinstance(matrix, ReparamMatrix):
            a, b = float(matrix.alpha.detach()), float(matrix.beta.detach())
            rows += [(layer, f"alpha_{suffix}", -1, a), (layer, f"beta_{suffix}", -1, b)]
            rows.append((layer, f"beta_{suffix}/alpha_{suffix}", -1, ratio(b, a)))
    return rows


def gains(model: nn.Module) -> pd.DataFrame:
    """Tidy gains of a sigprop model: columns layer (1..L), metric, head (-1 if not per head), value.

    Metrics: alpha_sa | alpha_comb, beta_sa, beta_ff, alpha_ff (per block); alpha, beta, gamma (per head,
    shaped / value-skipinit attention); alpha_v, beta_v, beta_v/alpha_v and alpha_p, beta_p,
    beta_p/alpha_p where W^V / W^P are reparameterised (Eq. 6).
    """
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    if not blocks:
        raise SigpropError(f"gains() needs a sigprop model (with sigprop Block modules); got {type(model).__name__}")
    rows = [row for layer, block in enumerate(blocks, start=1) for row in block_gains(block, layer)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["value"] = frame["value"].astype(float)
    return frame
