"""What a probe pass needs in memory, estimated before any work, so `analyze` refuses in one line what cannot fit."""

from __future__ import annotations

import os
from pathlib import Path

from sigprop.errors import SigpropError


def probe_bytes(depth: int, width: int, heads: int, seq_len: int, batch: int, vocab_size: int, *, blocks: int = 1,
                theory: bool = True, grad: bool = False) -> int:
    """A rough peak of one analyze pass in bytes, dominated by the float64 T x T kernels: B per layer measured, with
    their cosine and eigenvalue work (~3x), as many again for theory, two blocks' at once when probing several
    (measured: within ~20% at T = 512-2048); plus one layer's float32 attention scores (every layer's with grad),
    activations and weights."""
    L, d, H, T, B = depth, width, heads, seq_len, batch
    kernels = 8 * B * T * T * (L + 1) * (6 if theory else 3) * (2 if blocks > 1 else 1)
    scores = 4 * B * H * T * T * (L if grad else 1)
    acts = 4 * B * T * d * (L + 1) * (8 if grad else 2)
    weights = 4 * (12 * L * d * d + 2 * vocab_size * d) * (2 if grad else 1)
    return kernels + scores + acts + weights


def available_bytes() -> int | None:
    """Memory this process can still take (Linux MemAvailable, else free pages), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_fits(depth: int, width: int, heads: int, seq_len: int, batch: int, vocab_size: int, **kw) -> None:
    """Refuse, in one line, a probe batch whose analyze pass cannot fit in the memory left (T x T kernels grow as T^2);
    `kw`: probe_bytes' blocks, theory, grad."""
    need, free = probe_bytes(depth, width, heads, seq_len, batch, vocab_size, **kw), available_bytes()
    if free is None or need <= free:
        return
    lo, hi = 0, seq_len  # the longest sequence that fits (the estimate grows with T)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if probe_bytes(depth, width, heads, mid, batch, vocab_size, **kw) <= free else (lo, mid - 1)
    raise SigpropError(f"seq_len {seq_len} with batch {batch}, depth {depth}, width {width}, {heads} heads needs about "
                       f"{need / 2**30:,.1f} GiB to probe (its T x T kernels per layer) and {free / 2**30:,.1f} GiB are free; "
                       f"accepted: seq_len up to about {lo} at this batch, or a smaller batch or depth")
