"""What a probe pass costs: peak memory and time of a probed forward (and backward) against the plain pass.

One model (Pre-LN by default; 18 x 768, 12 heads) on one batch (8 x T = 1024), four cases measured in the
same process, interleaved per repeat:

    forward            model(idx) under no_grad                       (the baseline of a probe pass)
    forward + probe    sigprop.probes.measure(model, idx)              (default metrics: 5 kernel metrics per layer)
    backward           the model's loss forward + autograd.grad        (the baseline of a backward probe)
    backward + probe   measure(model, idx, grad=True)                  (forward metrics + dL/dX + weight-gradient norms)

Peak memory is the process's peak resident set above its level just before the call (Linux: the peak is
reset through /proc/self/clear_refs and read from VmHWM; freed heap is returned with malloc_trim between
cases, and sigprop's malloc tuning is off here), so the model's own parameters are not counted and one
timed run per case also gives its memory. Time is the median over repeats.

    .venv/bin/python benchmarks/probe_cost.py [--depth 18 --width 768 --seq-len 1024 --batch 8] [--out results/probe_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import ctypes
import ctypes.util
from sigprop.blocks import build_model
from sigprop.errors import SigpropError
from sigprop.probes import lm_loss, measure


def cases(model, idx) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]

    def forward() -> None:
        with torch.no_grad():
            model(idx)

    def backward() -> None:
        torch.autograd.grad(lm_loss(model, idx), params, allow_unused=True)

    return {
        "forward": forward,
        "forward + probe": lambda: measure(model, idx),
        "backward": backward,
        "backward + probe": lambda: measure(model, idx, grad=True),
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"error: /proc/self/status has no {field} (this benchmark measures memory on Linux only)")


def peak_rss_mb(fn) -> tuple[float, float]:
    """(seconds, peak resident MB above the level before) of one call of fn."""
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return seconds, (_status_kb("VmHWM") - before) / 1024


def run(block: str, depth: int, width: int, heads: int, seq_len: int, batch: int, vocab: int, repeats: int) -> dict:
    """{case: {"time_s", "peak_mb"}} plus the settings and ratios to each baseline."""
    model = build_model(block, seed=0, depth=depth, width=width, heads=heads, vocab_size=vocab, context=seq_len).eval()
    idx = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    for fn in cases(model, idx[:1, : min(seq_len, 32)]).values():  # warm-up on a short batch: one-time costs out
        fn()
    fns = cases(model, idx)
    times = {name: [] for name in fns}
    peak = {name: 0.0 for name in fns}
    for r in range(repeats):  # interleaved: machine drift hits every case alike
        for name, fn in fns.items():
            seconds, mb = peak_rss_mb(fn)
            times[name].append(seconds)
            peak[name] = max(peak[name], mb)
    out = {name: {"time_s": statistics.median(times[name]), "peak_mb": peak[name]} for name in fns}
    for probed, base in (("forward + probe", "forward"), ("backward + probe", "backward")):
        out[probed]["time_ratio"] = out[probed]["time_s"] / out[base]["time_s"]
        out[probed]["memory_ratio"] = out[probed]["peak_mb"] / out[base]["peak_mb"]
    return {"settings": dict(block=block, depth=depth, width=width, heads=heads, seq_len=seq_len, batch=batch, vocab=vocab,
                             repeats=repeats, threads=torch.get_num_threads(), torch=torch.__version__), "cases": out}


def table(result: dict) -> str:
    lines = ["| case | time (s) | peak MB above the model | time / baseline | memory / baseline |", "|---|---:|---:|---:|---:|"]
    for name, c in result["cases"].items():
        ratio = lambda k: f"{c[k]:.2f}" if k in c else "1"  # noqa: E731
        lines.append(f"| {name} | {c['time_s']:.2f} | {c['peak_mb']:.0f} | {ratio('time_ratio')} | {ratio('memory_ratio')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", default="pre-ln")
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args.block, args.depth, args.width, args.heads, args.seq_len, args.batch, args.vocab_size, args.repeats)
    except SigpropError as e:
        raise SystemExit(f"error: {e}") from None
    print(table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
