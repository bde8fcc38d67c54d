"""Why `sigprop.blocks.attention.sdpa` runs short-sequence CPU attention in fp32 under bf16 autocast.

Times forward + backward of causal F.scaled_dot_product_attention on CPU for fp32 inputs, bf16 inputs,
bf16 inputs upcast to fp32, and sigprop's sdpa() (upcast only for T <= 128), interleaved, median of repeats.

    .venv/bin/python benchmarks/sdpa_dtype.py [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from sigprop.perf.timers import timed
from sigprop.blocks.attention import sdpa


def upcast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> torch.Tensor:
    """bf16 inputs through the fp32 kernel, result back in bf16."""
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=is_causal).to(q.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    for B, H, T, D in [(16, 4, 128, 64), (4, 12, 128, 64), (4, 4, 512, 64), (2, 4, 1024, 64), (1, 4, 2048, 64)]:
        inputs = {dt: [torch.randn(B, H, T, D, dtype=dt, requires_grad=True) for _ in range(3)] for dt in (torch.float32, torch.bfloat16)}

        def run(dt: torch.dtype, fn) -> None:
            fn(*inputs[dt], is_causal=True).sum().backward()

        fns = {
            "fp32": lambda: run(torch.float32, F.scaled_dot_product_attention),
            "bf16": lambda: run(torch.bfloat16, F.scaled_dot_product_attention),
            "bf16 via fp32": lambda: run(torch.bfloat16, upcast),
            "sigprop sdpa()": lambda: run(torch.bfloat16, sdpa),
        }
        for f in fns.values():
            f()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                times[k].append(timed(f, cpu))
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(f"B={B} H={H} T={T} dh={D}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items())
              + f"; bf16 / via-fp32 = {med['bf16'] / med['bf16 via fp32']:.2f}x")


if __name__ == "__main__":
    main()
