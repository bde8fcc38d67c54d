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



class Optimizers(torch.optim.Optimizer):
    """Several optimisers stepped as one (Muon on the hidden matrices, AdamW on the rest): one `param_groups` list for
    the schedule, one state dict for checkpoints."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):  # noqa: D107 - no base __init__: it needs params
        self.optimizers = optimizers
        self.defaults = {}

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def step(self, closure=None) -> None:  # noqa: ARG002 - no closure: each optimiser steps once
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        parts = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(parts, list) or len(parts) != len(self.optimizers):
            raise ValueError(f"expected the states of {len(self.optimizers)} optimisers")
        for o, sd in zip(self.optimizers, parts):
            o.load_state_dict(sd)


def _is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """Muon's parameters: 2-D matrices inside the blocks (embeddings, the tied head and gains stay with AdamW)."""
    return p.ndim == 2 and name.startswith("blocks.")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The paper's AdamW, or Muon on the blocks' matrices with AdamW for the rest (`cfg.optimizer`). Muon's update is
    rescaled to AdamW's RMS (`adjust_lr_fn="match_rms_adamw"`), so both read the same learning rate."""
    adamw = lambda groups: torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)  # noqa: E731
    if cfg.optimizer == "adamw":
        return adamw(optimizer_groups(model, cfg))
    hidden = [p for n, p in model.named_parameters() if p.requires_grad and _is_hidden_matrix(n, p)]
    ids = {id(p) for p in hidden}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in optimizer_groups(model, cfg)]
    muon = torch.optim.Muon([{"params": hidden, "lr_mult": 1.0}], lr=cfg.lr, weight_decay=cfg.weight_decay,
                            adjust_lr_fn="match_rms_adamw")
    return Optimizers([muon, adamw([g for g in rest if g["params"]])])
