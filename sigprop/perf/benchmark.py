"""Throughput, parameters, peak memory and MFU per block: `sp.bench(...)` and `sigprop bench`.

How it measures (so the numbers can be trusted on a noisy shared machine):
- every block gets its own model + AdamW, built once; each is warmed up (excluded from timing);
- repeats are *interleaved*: repeat r times one step of every block (and one matmul-peak sample) before
  repeat r + 1 starts, so machine drift hits all blocks alike (the order rotates by one case per repeat); we report the median over repeats, and
  `ratio_paired`, the median of per-repeat ratios to the baseline (cancels slow drift);
- `ideal` is the speed-up model FLOPs alone would give (baseline FLOPs per token / the block's);
- MFU = model FLOPs per second / a matmul peak measured in the same run, on the same device and dtype
  (a big square matmul, sampled inside the same interleaved loop);
- model FLOPs count what each block computes: SAS has no W^V/W^P matmuls, a frozen matrix costs no
  weight gradient, causal attention scores cover (T + 1) / 2 keys on average;
- peak memory: CUDA -> torch.cuda.max_memory_allocated; CPU -> the torch profiler's allocator
  events (the running "Total Allocated" of the CPU allocator during one step) plus the bytes alive
  before the step (parameters, buffers, gradients, optimizer state). tracemalloc cannot see these.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from sigprop.blocks.attention import Attention
from sigprop.blocks.fused import IMPLS, check_impl
from sigprop.blocks.model import ModelConfig, Transformer, build_model, param_groups
from sigprop.blocks.spec import PRESETS, get_spec
from sigprop.perf.cpu import tune_malloc as cpu_tune_malloc
from sigprop.errors import SigpropError, check_choice, check_positive
from sigprop.perf.flops import MODES, model_flops_per_token
from sigprop.runs import atomic_write_bytes
from sigprop.perf.timers import DTYPES, alive_bytes, check_device, cpu_step_peak_bytes, matmul_peak_sample, timed

DEFAULT_BLOCKS = ("pre-ln", "parallel", "sas", "sas-p", "sas-p-nonorm")


# ------------------------------------------------------------------------------------------------
# One benchmark case: a model (+ optimizer) and its step
# ------------------------------------------------------------------------------------------------


@dataclass
class _Case:
    """One (block, attention path, mode, seq) row: its model, step function and samples."""

    block: str
    path: str  # "fast" (attn_impl auto) | "sdpa" | "fused" | "compile" (that attn_impl) | "explicit" (the T x T path)
    mode: str
    seq: int
    batch: int
    model: Transformer
    opt: torch.optim.Optimizer | None
    step: Callable[[], object]
    times: list[float] = field(default_factory=list)
    mem_peak: int = 0
    mem_step: int = 0


def _make_step(model: nn.Module, opt, idx, targets, mode: str, autocast) -> Callable[[], object]:
    """A training step (forward, backward, AdamW, zero_grad) or a no-grad forward."""

    if mode == "infer":

        def infer() -> object:
            with torch.inference_mode(), autocast():
                return model(idx)[0]

        return infer

    def train() -> object:
        with autocast():
            _, loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return train


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as in the paper's recipe; the fused kernel where this torch has it for the device."""
    groups = param_groups(model, 0.1)
    try:
        return torch.optim.AdamW(groups, lr=1e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):  # fused unsupported here: fall back to foreach
        return torch.optim.AdamW(groups, lr=1e-4, foreach=True)


def _as_list(x: int | str | Sequence) -> list:
    if isinstance(x, str):
        return [t.strip() for t in x.split(",") if t.strip()]
    if isinstance(x, int):
        return [x]
    return list(x)


@dataclass(frozen=True)
class BenchSettings:
    """Everything that defines a benchmark run (stored with the results)."""

    blocks: tuple[str, ...]
    depth: int
    width: int
    heads: int
    seqs: tuple[int, ...]
    batch: int | None
    tokens: int
    vocab: int
    kind: str
    dtype: str
    device: str
    modes: tuple[str, ...]
    repeats: int
    warmup: int
    compile: bool
    explicit: bool
    memory: bool
    baseline: str
    matmul_n: int
    threads: int
    malloc_tuned: bool = False  # glibc kept freed memory for reuse (sigprop.perf.cpu.tune_malloc)
    attn_impls: tuple[str, ...] = ("auto",)  # shaped attention's mix implementations timed (sigprop.blocks.fused)


@contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _batch_for(settings: BenchSettings, seq: int) -> int:
    return settings.batch if settings.batch else max(1, settings.tokens // seq)


def _build_cases(s: BenchSettings, device: torch.device) -> list[_Case]:
    autocast_dtype = DTYPES[s.dtype]
    cfg = ModelConfig(depth=s.depth, width=s.width, heads=s.heads, vocab_size=s.vocab, context=max(s.seqs), kind=s.kind)

    def autocast():
        if autocast_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device.type, dtype=autocast_dtype)

    cases = []
    for block in s.blocks:
        spec = get_spec(block)
        paths = ["fast"]
        if spec.attention in ("shaped", "value_skipinit"):  # a mix to implement: one case per attn_impl asked for
            paths = ["fast" if i == "auto" else i for i in s.attn_impls] + (["explicit"] if s.explicit else [])
        elif s.explicit and spec.attention != "softmax":
            paths.append("explicit")
        for path in paths:  # one model (and one AdamW) per block and path, shared by its modes and seqs
            model = build_model(spec, cfg, seed=0).to(device)
            for m in model.modules():
                if isinstance(m, Attention):
                    m.explicit = path == "explicit"
                    m.impl = path if path in IMPLS else "auto"
            opt = _adamw(model) if "train" in s.modes else None
            run = torch.compile(model) if s.compile else model
            for mode in s.modes:
                for seq in s.seqs:
                    batch = _batch_for(s, seq)
                    gen = torch.Generator().manual_seed(seq)
                    idx = torch.randint(0, s.vocab, (batch, seq), generator=gen).to(device)
                    targets = torch.randint(0, s.vocab, (batch, seq), generator=gen).to(device)
                    step = _make_step(run, opt, idx, targets, mode, autocast)
                    cases.append(_Case(spec.name, path, mode, seq, batch, model, opt if mode == "train" else None, step))
    return cases


def _measure_memory(case: _Case, device: torch.device) -> None:
    """Peak bytes of one step: above the between-step level (activations, temporaries, gradients) and in
    total (plus this model's parameters, buffers, gradients and optimizer state; other models excluded)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        case.step()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        extra = cpu_step_peak_bytes(case.step)
    case.mem_step, case.mem_peak = extra, alive_bytes(case.model, case.opt) + extra


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------


def bench(
    blocks: str | Sequence[str] = DEFAULT_BLOCKS,
    *,
    depth: int = 6,
    width: int = 256,
    heads: int = 4,
    seq: int | str | Sequence[int] = 128,
    batch: int | None = None,
    tokens: int = 2048,
    vocab: int = 8192,
    kind: str = "decoder",
    dtype: str = "fp32",
    device: str = "cpu",
    mode: str | Sequence[str] = "train",
    repeats: int = 5,
    warmup: int = 2,
    compile: bool = False,
    explicit: bool = False,
    attn_impl: str | Sequence[str] = "auto",
    memory: bool = True,
    baseline: str = "pre-ln",
    matmul_n: int | None = None,
    threads: int | None = None,
    tune_malloc: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Benchmark blocks side by side: one row per (block, attention path, mode, seq).

    `batch=None` keeps `tokens` per step (batch = tokens // seq), so a `seq` sweep compares memory
    per token at a fixed step size. The `baseline` block (added if missing) gives the `ratio` column
    (tokens/s over the baseline's, same mode/seq) and `params_vs_base`. `explicit=True` also times
    shaped attention through its explicit T x T path; `attn_impl` (comma-separated) times shaped attention's mix with
    each implementation of `sigprop.blocks.fused` (path "fast" = "auto"). `threads` sets torch's intra-op threads for the run
    (restored after; 1 is the fair choice when other jobs share the cores). `tune_malloc` (CPU) keeps freed
    memory in glibc's heap (`sigprop.perf.cpu.tune_malloc`, process-wide) as `sp.train` does. Returns a DataFrame; `df.attrs` holds the
    settings and the measured matmul peak.
    """
    names = [get_spec(b).name for b in _as_list(blocks)]  # validates every name
    if not names:
        raise SigpropError("no blocks given; accepted: comma-separated presets from " + ", ".join(PRESETS))
    baseline = get_spec(baseline).name
    if baseline not in names:
        names.insert(0, baseline)
    names = list(dict.fromkeys(names))
    check_choice("dtype", dtype, DTYPES)
    impls = tuple(dict.fromkeys(check_impl(i) for i in _as_list(attn_impl))) or ("auto",)
    modes = [m.strip() for m in _as_list(mode)]
    for m in modes:
        check_choice("mode", m, MODES)
    try:
        seqs = [int(t) for t in _as_list(seq)]
    except ValueError:
        raise SigpropError(f"bad seq {seq!r}; expected positive integers, e.g. 128,512,2048") from None
    for name, value in [("repeats", repeats), ("tokens", tokens), *(("seq", t) for t in seqs)]:
        check_positive(name, value)
    if batch is not None:
        check_positive("batch", batch)
    if warmup < 0:
        raise SigpropError(f"warmup must be >= 0, got {warmup!r}")
    dev = check_device(device)
    if threads is not None:
        check_positive("threads", threads)
    n = matmul_n or (8192 if dev.type == "cuda" else 2048)
    malloc_tuned = dev.type == "cpu" and tune_malloc and cpu_tune_malloc()
    s = BenchSettings(
        tuple(names), depth, width, heads, tuple(seqs), batch, tokens, vocab, kind, dtype, device,
        tuple(dict.fromkeys(modes)), repeats, warmup, compile, explicit, memory, baseline, n,
        threads or torch.get_num_threads(), malloc_tuned, impls,
    )
    with _num_threads(threads):
        return _run(s, dev, progress)


def _run(s: BenchSettings, dev: torch.device, progress: bool) -> pd.DataFrame:
    """Build, warm up, time (interleaved), measure memory; then tabulate."""
    n, dtype, repeats, warmup, memory = s.matmul_n, s.dtype, s.repeats, s.warmup, s.memory
    cases = _build_cases(s, dev)
    peak_a = torch.randn(n, n, device=dev).to(DTYPES[dtype])
    peaks: list[float] = []

    from rich.progress import Progress

    total = len(cases) * (warmup + repeats + (1 if memory else 0))
    bar = Progress(transient=True, disable=not progress)
    with bar:
        task = bar.add_task("bench: warm-up", total=total)
        matmul_peak_sample(dev, DTYPES[dtype], n, peak_a)
        for case in cases:
            for _ in range(warmup):
                case.step()
                bar.advance(task)
        for r in range(repeats):
            bar.update(task, description=f"bench: repeat {r + 1}/{repeats}")
            peaks.append(matmul_peak_sample(dev, DTYPES[dtype], n, peak_a))
            # Interleaved: every block once per repeat, the order rotated each repeat so that no case always
            # runs right after the same one (e.g. after a T x T step that evicted the caches).
            shift = r % len(cases)
            for case in cases[shift:] + cases[:shift]:
                case.times.append(timed(case.step, dev))
                bar.advance(task)
        if memory:
            bar.update(task, description="bench: peak memory")
            for case in cases:
                _measure_memory(case, dev)
                bar.advance(task)
    peak = statistics.median(peaks)
    df = _table(cases, s, peak)
    df.attrs.update(settings=asdict(s), peak_flops=peak)
    return df


def _table(cases: list[_Case], s: BenchSettings, peak: float) -> pd.DataFrame:
    """The tidy result: one row per case, ratios against the baseline block's fast path."""
    from sigprop.plots.style import block_style

    rows = []
    for c in cases:
        t = statistics.median(c.times)
        toks = c.batch * c.seq
        flops = model_flops_per_token(c.model, c.seq, c.mode)
        per_block = sum(p.numel() for p in c.model.blocks[-1].parameters() if p.requires_grad)
        rows.append(
            {
                "block": c.block,
                "label": block_style(c.block)["label"] + (f" ({c.path})" if c.path != "fast" else ""),
                "path": c.path,
                "attn_impl": _impl_of(c, s),
                "mode": c.mode,
                "seq": c.seq,
                "batch": c.batch,
                "dtype": s.dtype,
                "device": s.device,
                "params": c.model.num_params(),
                "params_per_block": per_block,
                "step_ms": 1e3 * t,
                "step_ms_min": 1e3 * min(c.times),
                "step_ms_max": 1e3 * max(c.times),
                "tokens_per_s": toks / t,
                "gflop_per_token": flops / 1e9,
                "tflops": flops * toks / t / 1e12,
                "mfu": flops * toks / t / peak,
                "mem_peak_mb": c.mem_peak / 2**20 if s.memory else math.nan,
                "mem_step_mb": c.mem_step / 2**20 if s.memory else math.nan,
                "mem_step_kb_per_token": c.mem_step / 2**10 / toks if s.memory else math.nan,
            }
        )
    df = pd.DataFrame(rows)
    base = df[(df.block == s.baseline) & (df.path == "fast")].set_index(["mode", "seq"])
    key = list(zip(df["mode"], df["seq"]))
    df.insert(df.columns.get_loc("step_ms"), "ratio", [r / base.loc[k, "tokens_per_s"] for r, k in zip(df.tokens_per_s, key)])
    # Drift-robust: the median over repeats of (baseline step time / this block's) within the same repeat.
    base_times = {(c.mode, c.seq): c.times for c in cases if c.block == s.baseline and c.path == "fast"}
    df.insert(df.columns.get_loc("step_ms"), "ratio_paired", [
        statistics.median(b / t for b, t in zip(base_times[(c.mode, c.seq)], c.times))
        for c in cases
    ])
    # The speed-up model FLOPs alone would give: baseline FLOPs per token / this block's.
    df.insert(df.columns.get_loc("step_ms"), "ideal", [base.loc[k, "gflop_per_token"] / f for f, k in zip(df.gflop_per_token, key)])
    df.insert(
        df.columns.get_loc("params_per_block"),
        "params_vs_base",
        [p / base.loc[k, "params"] - 1.0 for p, k in zip(df.params, key)],
    )
    return df


def _impl_of(c: _Case, s: BenchSettings) -> str:
    """What computed the case's attention: "sdpa" (SDPA, and today's mix where shaped), "fused", "compile", "explicit"."""
    attn = c.model.blocks[0].attn
    if c.path == "explicit":
        return "explicit"
    return attn.mix_impl(torch.device(s.device)) or "sdpa"


def _num(x: float | None, fmt: str) -> str:
    """A number, or '-' where it was not measured (NaN, or None from JSON)."""
    return "-" if x is None or pd.isna(x) else format(x, fmt)


def format_rows(df: pd.DataFrame) -> list[dict[str, str]]:
    """The result as display strings, one dict per row (the CLI table and benchmarks/summary.py show these)."""
    return [
        {
            "block": r.label, "mode": r.mode, "T": str(r.seq), "params": f"{r.params / 1e6:.2f}M",
            "vs base": f"{100 * r.params_vs_base:+.1f}%", "tokens/s": f"{r.tokens_per_s:,.0f}", "ratio": f"{r.ratio:.3f}",
            "paired": _num(getattr(r, "ratio_paired", None), ".3f"), "ideal": f"{r.ideal:.3f}", "ms/step": f"{r.step_ms:.1f}",
            "MFU": f"{100 * r.mfu:.0f}%", "peak MB": _num(r.mem_peak_mb, ",.0f"), "step KB/tok": _num(r.mem_step_kb_per_token, ".1f"),
        }
        for r in df.itertuples()
    ]


# ------------------------------------------------------------------------------------------------
# JSON round-trip
# ------------------------------------------------------------------------------------------------


def save_json(df: pd.DataFrame, path: str | Path, probes: pd.DataFrame | None = None) -> Path:
    """Write rows + settings + matmul peak as JSON, atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "settings": df.attrs.get("settings", {}),
        "peak_flops": df.attrs.get("peak_flops"),
        "rows": json.loads(df.to_json(orient="records")),
    }
    if probes is not None:
        doc["probes"] = json.loads(probes.to_json(orient="records"))
    atomic_write_bytes(path, json.dumps(doc, indent=1).encode())
    return path


def load_json(path: str | Path) -> pd.DataFrame:
    """Read a `save_json` file back into the same DataFrame (settings and peak in `df.attrs`)."""
    path = Path(path)
    if not path.is_file():
        raise SigpropError(f"no benchmark file at {str(path)!r}; expected a JSON written by `sigprop bench --json`")
    try:
        doc = json.loads(path.read_text())
        df = pd.DataFrame(doc["rows"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SigpropError(f"{str(path)!r} is not a sigprop bench JSON ({e}); expected keys settings, peak_flops, rows") from None
    df.attrs.update(settings=doc.get("settings", {}), peak_flops=doc.get("peak_flops"))
    return df
