"""Where a GPU training step's time and memory go: Pre-LN against SAS-P with each shaped-mix implementation (issue 30).

    python benchmarks/gpu_profile.py --out out/profile                      # CUDA, 18 x 768, batch 128, T 128, bf16
    python benchmarks/gpu_profile.py --device cpu --depth 2 --width 64 --heads 2 --batch 2 --vocab 256 --out DIR   # tiny

One case per (block, attn_impl): Pre-LN once, SAS-P per implementation (default sdpa, fused). For each, after warm-up:
the step time (median of --steps), the peak memory of one step above the weights, the bytes the forward saves for
backward (`saved_tensors_hooks`, each storage once, parameters apart), and one torch.profiler step: kernels by self
CUDA time (self CPU time of ops on a CPU) grouped by kind. Writes DIR/profile.json, DIR/kernels_<case>.txt (the
profiler's table) and DIR/profile.md (the group table with the difference to the baseline: where the extra ms go).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

if not torch.cuda.is_available():  # Triton kernels run on a CPU only in its interpreter, on before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # no "USDT ... profiler_start" line per profiled step

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from sigprop.blocks.fused import IMPLS, set_attn_impl  # noqa: E402
from sigprop.blocks.model import build_model  # noqa: E402
from sigprop.errors import SigpropError, check_choice  # noqa: E402
from sigprop.perf.benchmark import _adamw, _make_step  # noqa: E402
from sigprop.perf.timers import DTYPES, check_device, cpu_step_peak_bytes, timed  # noqa: E402

#: CUDA kernel names -> group, first match wins. Our Triton kernels are _mix_fwd/_mix_bwd; Inductor's start triton_.
KERNEL_GROUPS = [
    ("matmul", r"gemm|cutlass|nvjet|xmma|cublas|splitK"),
    ("attention kernel (SDPA)", r"flash|fmha|attention"),
    ("shaped mix (fused Triton)", r"_mix_fwd|_mix_bwd"),
    ("Inductor (compiled)", r"^triton_"),
    ("cross-entropy", r"softmax|nll_loss|cross_entropy"),
    ("norms", r"norm|Moments|GammaBeta"),
    ("optimizer", r"multi_tensor|adam|Adam"),
    ("running mean (cumsum)", r"scan|cumsum"),
    ("activation", r"relu|threshold|gelu|clamp"),
    ("dtype casts and copies", r"copy|cast|Cast"),
    ("reductions (gain gradients, sums)", r"reduce"),
    ("other elementwise", r"elementwise|Functor|fill|zero"),
]
#: CPU: aten op names -> group (benchmarks/profile_ops.py's grouping).
OP_GROUPS = [
    ("matmul", r"^aten::(mm|bmm|addmm|baddbmm|matmul|linear)$"),
    ("attention kernel (SDPA)", r"scaled_dot_product"),
    ("shaped mix (fused Triton)", r"_FusedMix"),
    ("cross-entropy", r"log_softmax|nll_loss"),
    ("norms", r"norm"),
    ("optimizer", r"adam|Optimizer"),
    ("running mean (cumsum)", r"cumsum"),
    ("activation", r"threshold|relu|clamp_min|gelu"),
    ("dtype casts and copies", r"^aten::(copy_|_to_copy|to)$"),
    ("reductions (gain gradients, sums)", r"^aten::(sum|mean)$"),
    ("other elementwise", r"^aten::(mul|add|add_|sub|div|addcmul|fill_|zero_|pow|neg|mul_|div_|sqrt|rsqrt|repeat_interleave)$"),
]
REST = "rest"


def group_of(name: str, groups: list[tuple[str, str]]) -> str:
    for group, pattern in groups:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    return REST


def make_case(block: str, impl: str, a: argparse.Namespace, dev: torch.device):
    """A model with AdamW and its training step (bf16: autocast) for one block and attn_impl."""
    model = set_attn_impl(build_model(block, depth=a.depth, width=a.width, heads=a.heads, vocab_size=a.vocab,
                                      context=a.seq, seed=0).to(dev), impl)
    gen = torch.Generator().manual_seed(0)
    idx, tgt = (torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen).to(dev) for _ in range(2))
    dtype = DTYPES[a.dtype]
    autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype != torch.float32 else nullcontext
    return model, _make_step(model, _adamw(model), idx, tgt, "train", autocast)


def saved_bytes(model: torch.nn.Module, step) -> dict[str, float]:
    """MB the step saves for backward: each storage once, split into parameters (alive anyway) and activations, and
    the activations by dtype."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[int, str]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = (st.nbytes(), str(t.dtype).replace("torch.", ""))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    out = {"parameters": 0.0, "activations": 0.0}
    for ptr, (n, dtype) in seen.items():
        key = "parameters" if ptr in params else "activations"
        out[key] += n / 2**20
        if key == "activations":
            out[f"activations {dtype}"] = out.get(f"activations {dtype}", 0.0) + n / 2**20
    return out


def peak_step_mb(step, dev: torch.device) -> float:
    """Peak MB one step allocates above what was alive before it."""
    if dev.type != "cuda":
        return cpu_step_peak_bytes(step) / 2**20
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def profiled(step, dev: torch.device, rows: int) -> tuple[dict[str, float], list[list], str]:
    """One profiled step: ms by group, the top kernels (name, ms, calls) and the profiler's table."""
    cuda = dev.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    averages = prof.key_averages()
    kernels = [e for e in averages if str(getattr(e, "device_type", "")).split(".")[-1] == "CUDA"]
    if cuda and kernels:  # kernels only (ops would count their kernels' time again)
        timed_rows = [(e, e.self_device_time_total, KERNEL_GROUPS) for e in kernels]
    elif cuda:  # a profiler that lists no kernel rows: the ops' self device time
        timed_rows = [(e, e.self_device_time_total, OP_GROUPS) for e in averages]
    else:
        timed_rows = [(e, e.self_cpu_time_total, OP_GROUPS) for e in averages]
    groups: dict[str, float] = {}
    top = []
    for e, us, patterns in timed_rows:
        g = group_of(e.key, patterns)
        groups[g] = groups.get(g, 0.0) + us / 1e3
        top.append([e.key[:120], us / 1e3, e.count, g])
    top.sort(key=lambda r: -r[1])
    table = averages.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=rows)
    return groups, top[:rows], table


def markdown(cases: dict[str, dict], base: str) -> str:
    """ms per step by group, per case, and each case minus the baseline (positive: the case spends more there)."""
    names = list(cases)
    groups = list(dict.fromkeys(g for c in cases.values() for g in c["groups"]))
    order = [g for g, _ in KERNEL_GROUPS + OP_GROUPS] + [REST]
    groups = sorted(groups, key=lambda g: order.index(g) if g in order else len(order))
    head = "| ms per training step | " + " | ".join(names) + "".join(f" | {n} − {base}" for n in names if n != base) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = [(g, {n: cases[n]["groups"].get(g, 0.0) for n in names}) for g in groups]
    rows.append(("**profiled total**", {n: sum(cases[n]["groups"].values()) for n in names}))
    rows.append(("step time (median, unprofiled)", {n: cases[n]["step_ms"] for n in names}))
    rows.append(("peak MB above the weights", {n: cases[n]["peak_step_mb"] for n in names}))
    rows.append(("MB saved for backward (activations)", {n: cases[n]["saved_mb"]["activations"] for n in names}))
    for g, v in rows:
        cells = [f"{v[n]:.1f}" for n in names] + [f"{v[n] - v[base]:+.1f}" for n in names if n != base]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(a: argparse.Namespace) -> dict:
    dev = check_device(a.device)
    check_choice("dtype", a.dtype, DTYPES)
    impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    for i in impls:
        check_choice("attn_impl", i, IMPLS)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [(a.baseline, "auto")] + [(a.block, i) for i in impls]
    cases: dict[str, dict] = {}
    for block, impl in plan:
        name = block if block == a.baseline else f"{block} ({impl})"
        model, step = make_case(block, impl, a, dev)
        for _ in range(a.warmup):
            step()
        times = [timed(step, dev) * 1e3 for _ in range(a.steps)]
        peak = peak_step_mb(step, dev)
        saved = saved_bytes(model, step)
        groups, top, table = profiled(step, dev, a.rows)
        (out / f"kernels_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.txt").write_text(table)
        cases[name] = {"block": block, "attn_impl": impl, "step_ms": statistics.median(times), "step_ms_all": times,
                       "peak_step_mb": peak, "saved_mb": saved, "groups": groups, "top": top}
        print(f"{name}: {statistics.median(times):.1f} ms/step, peak {peak:,.0f} MB above weights, "
              f"saved {saved['activations']:,.0f} MB", flush=True)
        del model, step
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    settings = {k: v for k, v in vars(a).items() if k != "out"}
    if dev.type == "cuda":
        settings["gpu"] = torch.cuda.get_device_name(0)
    settings["torch"] = torch.__version__
    doc = {"settings": settings, "cases": cases}
    (out / "profile.json").write_text(json.dumps(doc, indent=1))
    md = f"{a.depth}×{a.width}, {a.heads} heads, V={a.vocab}, batch {a.batch} × T={a.seq}, {a.dtype}, {a.device}" + (
        f" ({settings['gpu']})" if "gpu" in settings else "") + f", torch {torch.__version__}\n\n" + markdown(cases, a.baseline)
    (out / "profile.md").write_text(md)
    print(md)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda | cpu")
    ap.add_argument("--baseline", default="pre-ln", help="the block every case is compared with")
    ap.add_argument("--block", default="sas-p", help="the shaped block profiled with each implementation")
    ap.add_argument("--impls", default="sdpa,fused", help="comma-separated attn_impl values for --block")
    ap.add_argument("--dtype", default="bf16", help="bf16 (autocast) | fp32")
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per case (Triton compiles in the first)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    ap.add_argument("--rows", type=int, default=40, help="rows of each kernel table")
    ap.add_argument("--out", required=True, help="folder for profile.json, profile.md and kernels_*.txt")
    try:
        run(ap.parse_args(argv))
    except SigpropError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
