"""Shaped attention: fast path (SDPA + running mean, no T x T) vs the explicit T x T path, and Pre-LN's
softmax SDPA attention, for T = 128 ... 4096 at width 256. Time (forward + backward) and peak memory.

    .venv/bin/python benchmarks/attention.py [--seq 128,512,2048,4096] [--tokens 4096] [--repeats 5] [--json FILE]

Same tokens per step at every T (batch = tokens // T), so memory per token is comparable across T.
Paths are interleaved in every repeat; we report medians. Peak memory: the torch profiler's CPU
allocator events (bytes above the level before the step; see sigprop.perf.timers.cpu_step_peak_bytes),
or torch.cuda.max_memory_allocated on CUDA.
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd
import torch
from rich.console import Console
from rich.progress import track

from sigprop.perf.benchmark import save_json
from sigprop.perf.timers import cpu_step_peak_bytes, timed
from sigprop.blocks.attention import Attention
from sigprop.blocks.spec import get_spec

PATHS = {  # label: (preset, explicit)
    "Pre-LN softmax (SDPA)": ("pre-ln", False),
    "shaped, fast": ("sas", False),
    "shaped, explicit T×T": ("sas", True),
}


def attention_step(label: str, seq: int, tokens: int, width: int, heads: int, device: torch.device):
    """A forward + backward of one attention layer on a fixed random input."""
    preset, explicit = PATHS[label]
    torch.manual_seed(0)
    attn = Attention(get_spec(preset), width, heads, causal=True, layer=1).to(device)
    attn.explicit = explicit
    x = torch.randn(max(1, tokens // seq), seq, width, device=device, requires_grad=True)

    def step() -> None:
        attn(x).sum().backward()
        x.grad = None
        attn.zero_grad(set_to_none=True)

    return step


def peak_bytes(step, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return cpu_step_peak_bytes(step)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", default="128,256,512,1024,2048,4096")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    seqs = [int(t) for t in args.seq.split(",")]
    steps = {(lab, T): attention_step(lab, T, args.tokens, args.width, args.heads, device) for T in seqs for lab in PATHS}
    for step in steps.values():  # warm-up, excluded
        step()
    times: dict = {k: [] for k in steps}
    for _ in track(range(args.repeats), description="attention: interleaved repeats"):
        for k, step in steps.items():
            times[k].append(timed(step, device))
    rows = []
    for (lab, T), step in steps.items():
        t = statistics.median(times[(lab, T)])
        mem = peak_bytes(step, device)
        rows.append({"path": lab, "seq": T, "batch": max(1, args.tokens // T), "ms": 1e3 * t,
                     "us_per_token": 1e6 * t / args.tokens, "peak_mb": mem / 2**20, "kb_per_token": mem / 2**10 / args.tokens})
    df = pd.DataFrame(rows)
    wide = df.pivot(index="seq", columns="path", values=["ms", "peak_mb"]).round(1)
    fast, expl = df[df.path == "shaped, fast"].set_index("seq"), df[df.path == "shaped, explicit T×T"].set_index("seq")
    wide[("explicit/fast", "time")] = (expl.ms / fast.ms).round(2)
    wide[("explicit/fast", "memory")] = (expl.peak_mb / fast.peak_mb).round(1)
    pd.set_option("display.width", 200)
    Console().print(f"attention layer fwd+bwd, width {args.width}, {args.heads} heads, {args.tokens} tokens/step, "
                    f"{args.device}, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(wide.to_string())
    if args.json:
        df.attrs.update(settings=vars(args), peak_flops=None)
        save_json(df, args.json)


if __name__ == "__main__":
    main()
