"""Timing and memory primitives of `sigprop bench` and the scripts in benchmarks/: one timed call (CUDA events or
perf_counter), a matmul-peak sample, and a CPU step's peak allocator bytes from the torch profiler."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from sigprop.errors import SigpropError, check_choice

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEVICES = ("cpu", "cuda")




def check_device(device: str) -> torch.device:
    """torch.device for "cpu" / "cuda", with a one-line error when the name is unknown or CUDA is absent."""
    check_choice("device", device, DEVICES)
    if device == "cuda" and not torch.cuda.is_available():
        raise SigpropError("device 'cuda' is not available on this machine; accepted: cpu")
    return torch.device(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of fn takes (CUDA: events around it, then synchronize)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_peak_sample(device: torch.device, dtype: torch.dtype, n: int, a: torch.Tensor | None = None) -> float:
    """FLOP/s of one n x n @ n x n matmul in `dtype` on `device` (one sample of the peak)."""
    a = torch.randn(n, n, device=device).to(dtype) if a is None else a
    return 2.0 * n**3 / timed(lambda: a @ a, device)


def peak_matmul_flops(device: str = "cpu", dtype: str = "fp32", n: int | None = None, repeats: int = 5) -> float:
    """The matmul peak alone (median FLOP/s over repeats, one warm-up); `bench` samples it interleaved."""
    dev = check_device(device)
    check_choice("dtype", dtype, DTYPES)
    n = n or (8192 if dev.type == "cuda" else 2048)
    a = torch.randn(n, n, device=dev).to(DTYPES[dtype])
    matmul_peak_sample(dev, DTYPES[dtype], n, a)
    return statistics.median(matmul_peak_sample(dev, DTYPES[dtype], n, a) for _ in range(repeats))


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages among tensors (None skipped, shared storage counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def alive_bytes(model: nn.Module, opt: torch.optim.Optimizer | None) -> int:
    """Bytes of parameters, buffers, gradients and optimizer state (what lives between steps)."""
    tensors = list(model.parameters()) + list(model.buffers()) + [p.grad for p in model.parameters()]
    if opt is not None:
        tensors += [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return tensor_bytes(tensors)


def cpu_step_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes the CPU allocator holds *above its level at the start* while fn runs.

    Read from the torch profiler's memory events: each allocation/free reports the allocator's running
    "Total Allocated" since the profiler started.
    """
    from torch.profiler import ProfilerActivity, profile

    # kineto prints "USDT ... profiler_start/stop" on stderr for every profile at its top level (5); 6 is
    # above all of them. Read once, at the first profile; a level the user set is kept.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    totals = [
        e["args"]["Total Allocated"]
        for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0
    ]
    return max([0, *totals])
