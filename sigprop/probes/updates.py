"""Probes during training: the backward metrics on the probe batch and each weight's update-to-weight ratio.

    tracker = UpdateRatios()
    rows = training_rows(model, probe_idx, tracker)   # at every probe step: grad_* rows and update_ratio rows

`update_ratio` = ||W_now - W_then||_F / ||W_then||_F for every declared weight (blocks.{l}.attn.W_Q, ...),
over the steps since the previous probe (the first probe has none). It is the classic health check of an
optimiser setting (about 1e-3 per step for Adam at a good learning rate), here per layer and matrix.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from sigprop.probes.capture import measure
from sigprop.probes.layers import unwrap
from sigprop.probes.points import probe_points

COLUMNS = ["source", "layer", "module", "metric", "head", "value"]


class UpdateRatios:
    """Keeps a copy of every declared weight at the last call and reports how far each has moved since."""

    def __init__(self) -> None:
        self._then: dict[str, torch.Tensor] = {}

    def __call__(self, model: nn.Module) -> pd.DataFrame:
        weights = probe_points(unwrap(model)).weights
        rows = []
        with torch.no_grad():
            for w in weights:
                now = w.of(w.param).detach().float()
                then = self._then.get(w.name)
                if then is not None and then.shape == now.shape:
                    ratio = float((now - then).norm() / then.norm().clamp_min(1e-30))
                    rows.append(("update", w.block + 1, w.name, "update_ratio", -1, ratio))
                self._then[w.name] = now.clone()
        return pd.DataFrame(rows, columns=COLUMNS)


def training_rows(model: nn.Module, idx: torch.Tensor, updates: UpdateRatios) -> pd.DataFrame:
    """The backward probe rows (source "grad": grad_norm, grad_cos_mean, grad_W_*, grad_mlp) and the
    update ratios (source "update") of one probe step, in the probe-record columns (without `step`)."""
    m = measure(model, idx, grad=True, metrics=("norm_sq",)).metrics
    m = m[m.metric.str.startswith("grad_")].assign(source="grad")[COLUMNS]
    return pd.concat([m, updates(model)], ignore_index=True)
