"""Backward signal propagation: what a probe records from one backward pass of the model's own loss.

Per layer, on the residual stream X_l: `grad_norm` = mean over tokens of ||dL/dx_t|| and `grad_cos_mean`
= the mean token cosine of the gradients (their kernel G = g g^T / d, through the same pure metrics as
the forward kernels). Per block, the Frobenius norms of the weight gradients: `grad_W_Q`, `grad_W_K`,
`grad_W_V`, `grad_W_O`, `grad_W_in`, `grad_W_gate`, `grad_W_out` and `grad_mlp` (all MLP matrices
together). Rank collapse shows as `grad_W_Q`, `grad_W_K` vanishing against `grad_W_V` (Noci et al. 2022):
once the tokens are parallel, the softmax has nothing to tell apart. Gradients are taken with
torch.autograd.grad, so the model's own .grad buffers are never touched.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict

import torch
from torch import nn

from sigprop.errors import SigpropError
from sigprop.probes.layers import unwrap
from sigprop.probes.points import Weight

#: Stream metrics of the gradient dL/dX_l at every probed layer.
GRAD_STREAM_METRICS = ("grad_norm", "grad_cos_mean")
#: Canonical weight suffix -> metric name; the MLP matrices also add up to `grad_mlp`.
WEIGHT_METRICS = {"attn.W_Q": "grad_W_Q", "attn.W_K": "grad_W_K", "attn.W_V": "grad_W_V", "attn.W_O": "grad_W_O",
                  "mlp.W_in": "grad_W_in", "mlp.W_gate": "grad_W_gate", "mlp.W_out": "grad_W_out"}


def lm_loss(model: nn.Module, idx: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own LM loss on a batch: sigprop models predict the next token (decoder) or reconstruct
    the batch (encoder); HF models get labels = the batch (their heads shift causal labels themselves)."""
    inner = unwrap(model)
    if "key_mask" in inspect.signature(inner.forward).parameters:  # sigprop's models: forward(idx, targets, key_mask)
        if getattr(getattr(inner, "config", None), "kind", "decoder") == "encoder":
            _, loss = model(idx, idx, key_mask=key_mask)
        else:
            _, loss = model(idx[:, :-1], idx[:, 1:])
        return loss
    kwargs = {} if key_mask is None else {"attention_mask": key_mask.long()}
    out = model(input_ids=idx, labels=idx, **kwargs)
    loss = getattr(out, "loss", None)
    if not isinstance(loss, torch.Tensor):
        raise SigpropError(f"backward probes need the model's loss; {type(inner).__name__}(input_ids, labels) returned none "
                           "(use a model with an LM head, e.g. AutoModelForCausalLM)")
    return loss


def weight_grad_norms(weights: list[Weight], grads: dict[int, torch.Tensor | None]) -> list[tuple[int, str, str, float]]:
    """(layer, weight name, metric, ||grad||_F) for every weight with a gradient, plus grad_mlp per block.
    grads: {id(parameter): its gradient}."""
    rows, mlp = [], defaultdict(float)
    for w in weights:
        g = grads.get(id(w.param))
        if g is None:
            continue
        suffix = w.name.split(".", 2)[2]
        norm = float(w.of(g).detach().double().norm())
        rows.append((w.block + 1, w.name, WEIGHT_METRICS.get(suffix, f"grad_{suffix}"), norm))
        if suffix.startswith("mlp."):
            mlp[w.block] += norm**2
    rows += [(b + 1, f"blocks.{b}.mlp", "grad_mlp", math.sqrt(v)) for b, v in mlp.items()]
    return rows
