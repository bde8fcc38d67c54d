"""What a probe pass costs: peak memory and time of a probed forward (and backward) against the plain pass.

One model (Pre-LN by default; 18 x 768, 12 heads) on one batch (8 x T = 1024), six cases measured in the
same process, interleaved per repeat:

    forward                     model(idx) under no_grad                  (the baseline of a probe pass)
    forward + probe (before)    measure(model, idx) on the kernel path    (T x T kernels; `reference_metrics()`)
    forward + probe             sigprop.probes.measure(model, idx)         (default metrics, from the activations)
    backward                    the model's loss forward + autograd.grad   (the baseline of a backward probe)
    backward + probe (before)   measure(model, idx, grad=True), kernel path
    backward + probe            measure(model, idx, grad=True)            (forward metrics + dL/dX + weight-gradient norms)

"before" is the probe path before issue 30, kept callable (`sigprop.probes.direct.reference_metrics`), so both
are measured side by side on the same machine in the same run. `--forward-only` leaves out the backward cases.

Memory, two ways, both above the level just before the call (so the model's own parameters are not counted):
- tensor MB: the peak bytes torch's CPU allocator holds (the profiler's memory events, one extra untimed call per
  case; `sigprop.perf.timers.cpu_step_peak_bytes`): what the case keeps alive, the number the goal is read on;
- peak RSS MB: the process's peak resident set (Linux: reset through /proc/self/clear_refs, read from VmHWM; freed
  heap returned with malloc_trim between cases, sigprop's malloc tuning off), taken over the timed calls. It adds
  what glibc keeps of freed blocks: with its dynamic mmap threshold the same forward read 124 MB on one repeat and
  192 MB on the next (6 x 768, batch 2).
Time is the median over repeats; `paired` is the median over repeats of the ratio within one repeat.

    .venv/bin/python benchmarks/probe_cost.py [--depth 18 --width 768 --seq-len 1024 --batch 8] [--forward-only]
        [--repeats N] [--out results/probe_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import ctypes
import ctypes.util

import torch

from sigprop.blocks import build_model
from sigprop.errors import SigpropError
from sigprop.perf.timers import cpu_step_peak_bytes
from sigprop.probes import lm_loss, measure
from sigprop.probes.direct import reference_metrics

#: (probed case, its baseline) pairs the ratios are taken over.
PAIRS = (("forward + probe (before)", "forward"), ("forward + probe", "forward"),
         ("backward + probe (before)", "backward"), ("backward + probe", "backward"))


def cases(model, idx, backward: bool = True) -> dict:
    """{case: a function running it once}."""
    params = [p for p in model.parameters() if p.requires_grad]

    def forward() -> None:
        with torch.no_grad():
            model(idx)

    def grad() -> None:
        torch.autograd.grad(lm_loss(model, idx), params, allow_unused=True)

    def before(**kw) -> None:
        with reference_metrics():
            measure(model, idx, **kw)

    out = {"forward": forward, "forward + probe (before)": before, "forward + probe": lambda: measure(model, idx)}
    if backward:
        out.update({"backward": grad, "backward + probe (before)": lambda: before(grad=True),
                    "backward + probe": lambda: measure(model, idx, grad=True)})
    return out


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


def run(block: str, depth: int, width: int, heads: int, seq_len: int, batch: int, vocab: int, repeats: int,
        backward: bool = True) -> dict:
    """{case: {"time_s", "peak_mb", "tensor_mb"}} plus the settings and ratios to each baseline."""
    load = _loadavg()
    model = build_model(block, seed=0, depth=depth, width=width, heads=heads, vocab_size=vocab, context=seq_len).eval()
    idx = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    for fn in cases(model, idx[:1, : min(seq_len, 32)], backward).values():  # warm-up on a short batch: one-time costs out
        fn()
    fns = cases(model, idx, backward)
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    peak = {name: 0.0 for name in fns}
    for r in range(repeats):  # interleaved, the order rotated by one case per repeat: drift hits every case alike
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, mb = peak_rss_mb(fns[name])
            times[name].append(seconds)
            peak[name] = max(peak[name], mb)
    out = {name: {"time_s": statistics.median(times[name]), "peak_mb": peak[name],
                  "tensor_mb": cpu_step_peak_bytes(fns[name]) / 2**20, "times_s": times[name]} for name in fns}
    for probed, base in PAIRS:
        if probed in out:
            c, b = out[probed], out[base]
            c["time_ratio"] = c["time_s"] / b["time_s"]
            # the same ratio within each repeat (drift cancels), its median: the number to trust on a loaded machine
            c["paired_time_ratio"] = statistics.median(x / y for x, y in zip(times[probed], times[base]))
            # a baseline below the allocator's resolution (tiny models) has no ratio
            c["memory_ratio"] = c["peak_mb"] / b["peak_mb"] if b["peak_mb"] > 0 else float("nan")
            c["tensor_memory_ratio"] = c["tensor_mb"] / b["tensor_mb"] if b["tensor_mb"] > 0 else float("nan")
    return {"settings": dict(block=block, depth=depth, width=width, heads=heads, seq_len=seq_len, batch=batch, vocab=vocab,
                             repeats=repeats, threads=torch.get_num_threads(), torch=torch.__version__,
                             load_before=load, load_after=_loadavg()), "cases": out}


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (Linux), so a reader knows how busy the machine was."""
    path = Path("/proc/loadavg")
    return [float(v) for v in path.read_text().split()[:3]] if path.exists() else None


def table(result: dict) -> str:
    """The markdown table of benchmarks/README.md: times, the two memory measures, ratios to each baseline."""
    lines = ["| case | time (s) | time / baseline | paired | tensor MB | tensor / baseline | peak RSS MB | RSS / baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in result["cases"].items():
        ratio = lambda k: f"{c[k]:.2f}" if k in c else "1"  # noqa: E731
        lines.append(f"| {name} | {c['time_s']:.2f} | {ratio('time_ratio')} | {ratio('paired_time_ratio')} | {c['tensor_mb']:.0f} "
                     f"| {ratio('tensor_memory_ratio')} | {c['peak_mb']:.0f} | {ratio('memory_ratio')} |")
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
    ap.add_argument("--forward-only", action="store_true", help="leave out the backward cases (the slow half)")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args.block, args.depth, args.width, args.heads, args.seq_len, args.batch, args.vocab_size, args.repeats,
                     not args.forward_only)
    except SigpropError as e:
        raise SystemExit(f"error: {e}") from None
    print(table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
