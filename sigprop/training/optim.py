"""The paper's AdamW: weight decay on matrices and embeddings only, and per-matrix LR multipliers
(W^Q, W^K: `qk_lr_mult`; W^V, W^P: `vp_lr_mult`, Fig. 9). Each group carries `lr_mult` for the schedule."""

from __future__ import annotations

import torch
from torch import nn

from sigprop.training.config import TrainConfig

#: parameter-name endings of the attention matrices that get their own LR multiplier
QK_NAMES = ("attn.w_q.weight", "attn.w_k.weight")
VP_NAMES = ("attn.value.weight", "attn.value.delta", "attn.proj.weight", "attn.proj.delta")


def lr_mult_of(name: str, cfg: TrainConfig) -> float:
    """A parameter's LR multiplier: `qk_lr_mult` for W^Q, W^K; `vp_lr_mult` for W^V, W^P (Fig. 9); else 1."""
    if name.endswith(QK_NAMES):
        return cfg.qk_lr_mult
    return cfg.vp_lr_mult if name.endswith(VP_NAMES) else 1.0


def optimizer_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The paper's AdamW groups (decay on matrices/embeddings, none on gains/norms/biases), split further by LR
    multiplier (`lr_mult_of`) when one is not 1. Each group carries `lr_mult` for the schedule."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim >= 2, lr_mult_of(name, cfg)), []).append(p)
    return [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_mult": mult}
            for (decay, mult), ps in sorted(groups.items())]



def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(optimizer_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
