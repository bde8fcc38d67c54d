"""CPU allocator tuning: keep freed activation memory in the heap instead of handing it back to the OS.

PyTorch's CPU tensors come from glibc malloc. glibc serves every block above its mmap threshold (at most
32 MB, adapted at run time) with a fresh mmap and unmaps it on free, so each training step faults in and
zeroes its logits, their gradient and other big activations again: at the cpu scale (6 x 256,
2048 tokens per step) ~260 MB of page faults, ~110 ms of kernel time in a ~1.2 s step (~10%).
Raising the mmap and trim thresholds keeps those pages in the heap, where the next step reuses them
(`benchmarks/README.md`, "What separates SAS-P from its ideal"). The cost: the process keeps its peak
heap instead of shrinking between steps, which is what a training process wants anyway. jemalloc or
tcmalloc via LD_PRELOAD do the same thing from outside; this needs no extra library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: Set this environment variable to 1 to leave glibc's allocator alone.
OPT_OUT = "SIGPROP_NO_MALLOC_TUNING"

_M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1  # mallopt takes an int; glibc accepts up to INT_MAX here


def tune_malloc() -> bool:
    """Keep freed memory for reuse (glibc only; returns whether the allocator is now tuned).

    Process-wide and idempotent; a no-op off Linux/glibc or when SIGPROP_NO_MALLOC_TUNING=1.
    """
    if os.environ.get(OPT_OUT, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST))
