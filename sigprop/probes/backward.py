"""Backward signal propagation: what a probe records from one backward pass of the model's own loss (any model:
`lm_loss` reads the common signatures, or takes a `loss_fn`).

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
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from sigprop.errors import SigpropError
from sigprop.probes.layers import unwrap
from sigprop.probes.points import Weight

#: Stream metrics of the gradient dL/dX_l at every probed layer.
GRAD_STREAM_METRICS = ("grad_norm", "grad_cos_mean")
#: Canonical weight suffix -> metric name; the MLP matrices also add up to `grad_mlp`.
WEIGHT_METRICS = {"attn.W_Q": "grad_W_Q", "attn.W_K": "grad_W_K", "attn.W_V": "grad_W_V", "attn.W_O": "grad_W_O",
                  "mlp.W_in": "grad_W_in", "mlp.W_gate": "grad_W_gate", "mlp.W_out": "grad_W_out"}


def lm_loss(model: nn.Module, idx: torch.Tensor, key_mask: torch.Tensor | None = None,
            loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The model's own loss on a batch, so a backward probe can run on any model.

    loss_fn(model, idx) -> scalar loss, when given. Otherwise read from forward's signature: sigprop models
    predict the next token (decoder) or reconstruct the batch (encoder); Hugging Face models (`labels=`) get
    labels = the batch (their heads shift causal labels themselves); nanoGPT-style models (`targets=`) get
    model(idx[:, :-1], targets=idx[:, 1:]) and return (logits, loss); any other model's plain logits (a (B, T, V)
    tensor, or the first element of a tuple) get the next-token cross-entropy (padding left out via key_mask).
    """
    inner = unwrap(model)
    if loss_fn is not None:
        return _scalar(loss_fn(model, idx), "loss_fn(model, idx)")
    params = inspect.signature(inner.forward).parameters
    if "key_mask" in params:  # sigprop's models: forward(idx, targets, key_mask)
        if getattr(getattr(inner, "config", None), "kind", "decoder") == "encoder":
            _, loss = model(idx, idx, key_mask=key_mask)
        else:
            _, loss = model(idx[:, :-1], idx[:, 1:])
        return loss
    kwargs = {} if key_mask is None else {"attention_mask": key_mask.long()}
    if "labels" in params:  # Hugging Face
        labels = idx if key_mask is None else idx.masked_fill(~key_mask.bool(), -100)  # padded positions are no targets
        out = model(input_ids=idx, labels=labels, **kwargs)
        loss = getattr(out, "loss", None)
        if not isinstance(loss, torch.Tensor):
            raise SigpropError(f"backward probes need the model's loss; {type(inner).__name__}(input_ids, labels) returned "
                               "none (use a model with an LM head, e.g. AutoModelForCausalLM, or pass loss_fn)")
        return loss
    if "targets" in params:  # nanoGPT: forward(idx, targets=None) -> (logits, loss)
        out = model(idx[:, :-1], targets=idx[:, 1:])
        loss = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else getattr(out, "loss", None)
        return _scalar(loss, f"{type(inner).__name__}(idx, targets=)")
    out = model(idx, **kwargs) if "attention_mask" in params else model(idx)
    return _next_token_loss(out, idx, key_mask, type(inner).__name__)


def _scalar(loss: object, where: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise SigpropError(f"backward probes need a scalar loss; {where} gave {got}; accepted: a one-element tensor")
    return loss.reshape(())


def _next_token_loss(out: object, idx: torch.Tensor, key_mask: torch.Tensor | None, name: str) -> torch.Tensor:
    """Next-token cross-entropy of plain logits (a (B, T, V) tensor, a tuple starting with one, or `.logits`)."""
    if isinstance(out, Mapping):
        logits = out.get("logits")
    elif isinstance(out, (tuple, list)):
        logits = out[0] if out else None
    else:
        logits = out
    if not (isinstance(logits, torch.Tensor) and idx.ndim == 2 and logits.ndim == 3 and logits.shape[:2] == idx.shape
            and logits.shape[-1] > int(idx.max())):
        raise SigpropError(f"backward probes cannot tell {name}'s loss: its output is not (B, T, V) logits of the tokens "
                           "and forward takes no labels= or targets=; pass loss_fn=lambda model, idx: <scalar loss>")
    target = idx[:, 1:]
    if key_mask is not None:
        target = target.masked_fill(~key_mask[:, 1:].bool().to(target.device), -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100)


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
