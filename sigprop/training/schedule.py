"""Learning-rate schedules as pure functions of the step (so a resumed run needs no scheduler state)."""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, steps: int, warmup_steps: int, schedule: str = "linear", min_lr: float = 0.0) -> float:
    """Learning rate for optimiser update `step` (0-based): linear warm-up, then linear/cosine decay or constant.

    Warm-up reaches `lr` at update `warmup_steps - 1`; the decay starts from `lr` and would reach `min_lr` one
    update after the last (the paper's HF 'polynomial, power 1' schedule).
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    frac = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
    return lr - (lr - min_lr) * frac
