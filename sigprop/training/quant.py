"""W8A8 post-training fake quantisation: the practical consequence of outlier features.

The sequel (He et al. 2024, "Understanding and Minimising Outlier Features in Transformer Training", Sec. 6 and
Table 1) measures how much a trained model loses under 8-bit weights and activations: outlier features stretch an
activation tensor's range, so round-to-nearest int8 with one scale per tensor wipes out the small features
(OPT-125m W8A8 perplexity 63.4 for Pre-Norm + Adam against 14.87 for OP + SOAP).

`w8a8(model)` makes every linear map of the model compute with
- weights rounded to symmetric int8, one scale per output channel (absmax / 127), and
- inputs rounded to symmetric int8, one scale per tensor (dynamic absmax / 127 of each call's input),
through torch's fake-quantisation ops (`torch.fake_quantize_per_channel_affine`, `..._per_tensor_affine`), so the
arithmetic stays in float and runs anywhere. Linear maps are `nn.Linear`, Hugging Face GPT-2's `Conv1D`, and
sigprop's dense or reparameterised value/projection matrices; identity values/projections (SAS, SAS-P) have no
matrix to quantise. Embeddings and the LM head (a Hugging Face model's `get_output_embeddings()`, or any linear map
tied to an embedding) stay in full precision, as in the usual W8A8 setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sigprop.blocks.attention import DenseMatrix, ReparamMatrix

QMAX = 127


def fake_int8(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Round x to symmetric int8 and back: one absmax scale per slice along `axis` (per channel), or one per tensor."""
    tiny = torch.finfo(torch.float32).tiny
    x32 = x.float()
    if axis is None:
        scale = (x32.detach().abs().max() / QMAX).clamp_min(tiny)
        return torch.fake_quantize_per_tensor_affine(x32, scale, torch.zeros((), dtype=torch.int32), -QMAX, QMAX).to(x.dtype)
    dims = [d for d in range(x.ndim) if d != axis % x.ndim]
    scale = (x32.detach().abs().amax(dim=dims) / QMAX).clamp_min(tiny)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(x32, scale, zero, axis % x.ndim, -QMAX, QMAX).to(x.dtype)


def _quantised_forward(module: nn.Module):
    """A forward that quantises the input per tensor and the weight per output channel, or None if not a linear map."""
    if isinstance(module, nn.Linear):  # y = x W^T + b, W (out, in): channels on axis 0
        return lambda x: F.linear(fake_int8(x), fake_int8(module.weight, 0), module.bias)
    if isinstance(module, (DenseMatrix, ReparamMatrix)):  # y = x W, W (in, out): channels on axis 1
        return lambda x: fake_int8(x) @ fake_int8(module.weight, 1).to(x.dtype)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # HF GPT-2: y = x W + b, W (in, out)
        def conv1d(x: torch.Tensor) -> torch.Tensor:
            out = fake_int8(x).reshape(-1, x.shape[-1]) @ fake_int8(module.weight, 1)
            return (out + module.bias).reshape(*x.shape[:-1], module.nf)
        return conv1d
    return None


@contextlib.contextmanager
def w8a8(model: nn.Module) -> Iterator[int]:
    """Inside the block every linear map of `model` runs W8A8 fake-quantised; yields how many maps that is."""
    swapped = []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    try:
        for m in model.modules():
            if m is head or id(getattr(m, "weight", None)) in tied:
                continue
            fwd = _quantised_forward(m)
            if fwd is not None:
                m.forward = fwd  # an instance attribute shadows the class's forward until deleted
                swapped.append(m)
        yield len(swapped)
    finally:
        for m in swapped:
            del m.forward
