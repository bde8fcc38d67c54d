"""Where a training step's time goes, per block: the torch profiler's self-CPU time grouped by kind of op.

    .venv/bin/python benchmarks/profile_ops.py [--blocks pre-ln,sas-p] [--dtype bf16] [--depth 6 --width 256
        --heads 4 --batch 16] [--rounds 3] [--steps 2] [--threads 1] [--json FILE]

It answers "what separates SAS-P from its FLOP ideal": matmul time should shrink by the FLOP ratio, while
shared costs (attention kernel, cross-entropy, optimizer) do not shrink at all and shaped attention adds
its own elementwise work (alpha V + beta SDPA - gamma C V: a running mean and fused multiply-adds).
Blocks are profiled in interleaved rounds (every block once per round) and the per-step times averaged.
"""

from __future__ import annotations

import argparse
import re
import sys
from contextlib import nullcontext

import pandas as pd
import torch
from rich.console import Console
from torch.profiler import ProfilerActivity, profile

from sigprop.perf.benchmark import _adamw, _make_step
from sigprop.perf.timers import DTYPES
from sigprop.blocks.model import build_model
from sigprop.blocks.spec import get_spec
from sigprop.perf.cpu import tune_malloc
from sigprop.errors import SigpropError
from sigprop.plots.style import block_style
from sigprop.runs import atomic_write_json

#: Op-name patterns -> group, first match wins (self time of aten ops; autograd wrappers add ~nothing).
GROUPS = [
    ("matmul", r"^aten::(mm|bmm|addmm|baddbmm)$"),
    ("attention kernel (SDPA)", r"scaled_dot_product"),
    ("cross-entropy", r"log_softmax|nll_loss"),
    ("shaped attention extras", r"^aten::(cumsum|flip|addcmul)$"),
    ("norms", r"norm"),
    ("activation", r"threshold|relu|clamp_min|gelu"),
    ("optimizer", r"adam|Optimizer"),
    ("dtype casts and copies", r"^aten::(copy_|_to_copy|to)$"),
    ("other elementwise", r"^aten::(mul|add|add_|sub|div|fill_|zero_|sum|pow|neg|mul_|div_|sqrt|rsqrt|mean)$"),
]


def group_of(op: str) -> str:
    for name, pattern in GROUPS:
        if re.search(pattern, op):
            return name
    return "rest (views, autograd, embedding, ...)"


def profile_blocks(blocks, dtype, depth, width, heads, batch, vocab, rounds, steps) -> pd.DataFrame:
    """ms per training step by op group (rows) and block (columns)."""
    models = {}
    for b in blocks:
        model = build_model(b, depth=depth, width=width, heads=heads, vocab_size=vocab, seed=0)
        gen = torch.Generator().manual_seed(0)
        idx, tgt = (torch.randint(0, vocab, (batch, 128), generator=gen) for _ in range(2))
        autocast = (lambda: torch.autocast("cpu", dtype=DTYPES[dtype])) if dtype != "fp32" else nullcontext
        models[b] = _make_step(model, _adamw(model), idx, tgt, "train", autocast)
        for _ in range(2):  # warm-up
            models[b]()
    totals: dict[str, dict[str, float]] = {b: {} for b in blocks}
    for _ in range(rounds):
        for b, step in models.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    step()
            for e in prof.key_averages():
                g = group_of(e.key)
                totals[b][g] = totals[b].get(g, 0.0) + e.self_cpu_time_total / 1e3 / (rounds * steps)
    df = pd.DataFrame(totals).fillna(0.0)
    order = [g for g, _ in GROUPS] + ["rest (views, autograd, embedding, ...)"]
    df = df.reindex([g for g in order if g in df.index])
    df.loc["total"] = df.sum()
    return df


def markdown(df: pd.DataFrame, base: str) -> str:
    cols = list(df.columns)
    head = "| ms per training step | " + " | ".join(block_style(c)["label"] for c in cols)
    head += "".join(f" | {block_style(base)['label']} − {block_style(c)['label']}" for c in cols if c != base) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for g, row in df.iterrows():
        cells = [f"{row[c]:.1f}" for c in cols] + [f"{row[base] - row[c]:+.1f}" for c in cols if c != base]
        name = f"**{g}**" if g == "total" else g
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--blocks", default="pre-ln,sas-p", help="comma-separated presets; the first is the baseline")
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="bf16 = autocast")
    ap.add_argument("--depth", type=int, default=6, help="number of blocks L")
    ap.add_argument("--width", type=int, default=256, help="model width d")
    ap.add_argument("--heads", type=int, default=4, help="attention heads H")
    ap.add_argument("--batch", type=int, default=16, help="sequences of T = 128 per step")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary size")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (every block once per round)")
    ap.add_argument("--steps", type=int, default=2, help="profiled training steps per block and round")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", default=None, help="also write the table as JSON to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tune_malloc()
    blocks = [b.strip() for b in a.blocks.split(",") if b.strip()]
    try:
        for b in blocks:
            get_spec(b)
        df = profile_blocks(blocks, a.dtype, a.depth, a.width, a.heads, a.batch, a.vocab, a.rounds, a.steps)
    except SigpropError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Console().print(
        f"L={a.depth}, d={a.width}, H={a.heads}, V={a.vocab}, T=128, batch {a.batch}, {a.dtype}, {a.threads} thread(s), "
        f"{a.rounds} interleaved rounds x {a.steps} steps\n"
    )
    print(markdown(df, blocks[0]))
    if a.json:
        atomic_write_json(a.json, {"args": vars(a), "ms_per_step": df.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
