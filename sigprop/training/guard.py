"""What stops a run cleanly: the divergence guard, for a run whose loss or gradient norm has blown up (not only
one that hit NaN), and `StopFlag`, which turns Ctrl-C/SIGTERM into a checkpoint and a resumable stop.

A step is diverged when its loss or gradient norm is not finite, or, once `min_history` steps are known,
    loss      > diverge_loss_ratio * median(loss over the last diverge_window steps)
    grad_norm > diverge_grad_ratio * median(grad_norm over the last diverge_window steps)
(pre-clip gradient norm; a ratio of 0 turns that test off). The defaults (TrainConfig: 3x the loss,
100x the gradient norm, window 50) sit far outside healthy training: an LM's loss starts at ~ln(vocab)
and only falls, its loss spikes stay well under 2x the median, and clipped runs' gradient-norm spikes stay
within ~10x, while a blow-up (lr 30) passes 3x the loss within a few steps on its way to 1e8.
"""

from __future__ import annotations

import math
import signal
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field

#: Ratio tests start once this many steps (or the whole window, if shorter) are in the history.
MIN_HISTORY = 10


def divergence(loss: float, grad_norm: float, losses: list[float], grads: list[float],
               loss_ratio: float, grad_ratio: float) -> str | None:
    """Why this step counts as diverged (one line), or None. `losses`/`grads`: the recent healthy steps."""
    if not math.isfinite(loss):
        return f"loss is {loss}"
    if not math.isfinite(grad_norm):
        return f"gradient norm is {grad_norm}"
    if loss_ratio > 0 and losses:
        med = statistics.median(losses)
        if loss > loss_ratio * med:
            return f"loss {loss:.4g} is above {loss_ratio:g}x its running median {med:.4g} (diverge_loss_ratio)"
    if grad_ratio > 0 and grads:
        med = statistics.median(grads)
        if grad_norm > grad_ratio * med:
            return (f"gradient norm {grad_norm:.4g} is above {grad_ratio:g}x its running median {med:.4g} "
                    "(diverge_grad_ratio)")
    return None


@dataclass
class Guard:
    """Running loss / gradient-norm history of the healthy steps, saved in checkpoints so a resume judges alike."""

    loss_ratio: float
    grad_ratio: float
    window: int
    losses: deque = field(default_factory=deque)
    grads: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.losses = deque(self.losses, maxlen=self.window)
        self.grads = deque(self.grads, maxlen=self.window)

    def check(self, loss: float, grad_norm: float) -> str | None:
        """The reason this step diverged, or None (then it joins the history)."""
        ready = len(self.losses) >= min(MIN_HISTORY, self.window)
        why = divergence(loss, grad_norm, list(self.losses) if ready else [], list(self.grads) if ready else [],
                         self.loss_ratio, self.grad_ratio)
        if why is None:
            self.losses.append(loss)
            self.grads.append(grad_norm)
        return why

    def state(self) -> dict:
        return {"losses": list(self.losses), "grads": list(self.grads)}


class StopFlag:
    """SIGINT/SIGTERM set a flag instead of killing the process: the loop finishes its step, checkpoints, exits."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def set(self) -> bool:
        return self.signal is not None
