"""Which tokens a step sees: the global batch of a step (a pure function of seed, split and step, so resumed
and multi-process runs see the same rows and MLM masks) and each rank's micro-batches of it."""

from __future__ import annotations

import torch

from sigprop.data import mlm_mask
from sigprop.errors import SigpropError
from sigprop.training.config import TrainConfig


def batch_for_step(data, cfg: TrainConfig, split: str, step: int, mask: dict | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the whole global batch of `step`: LM shifts by one; MLM masks 25% of tokens.
    The MLM mask is a pure function of (seed, split, step), so resumed and multi-process runs see the same."""
    rows = data.batch(split, cfg.batch_size, step, seed=seed)
    if cfg.kind == "decoder":
        return rows[:, :-1], rows[:, 1:]
    g = torch.Generator().manual_seed(hash_seed(seed, split, step))
    return mlm_mask(rows[:, :-1], mask["mask"], data.vocab_size, p=cfg.mlm_p, generator=g, special_ids=mask["special_ids"])


def hash_seed(seed: int, split: str, step: int) -> int:
    return (seed * 1_000_003 + (0 if split == "train" else 7_919) * 104_729 + step) % (2**63 - 1)


def micro_batches(x: torch.Tensor, y: torch.Tensor, rank: int, world: int, accum: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the global batch, cut into `accum` micro-batches (rank-major, so N processes
    together see exactly the rows one process sees)."""
    B = x.shape[0]
    if B % (world * accum):
        raise SigpropError(f"batch_size {B} is not divisible by processes x grad_accum = {world} x {accum}")
    per = B // world
    xs, ys = x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]
    return list(zip(xs.chunk(accum), ys.chunk(accum)))


def count_targets(y: torch.Tensor) -> int:
    return int((y != -100).sum())
