"""What a probe pass costs against a training step, and the probe cadence that keeps it in budget.

`probe_overhead` times `sigprop.probes.measure` on a fixed probe batch beside one training step of each block,
interleaved as in `sigprop.perf.benchmark.bench`; `sigprop bench --probes` prints it. The probe pass before issue 30
(kernel path, `sigprop.probes.direct.reference_metrics`) is timed in the same loop, so both read on one machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pandas as pd
import torch

from sigprop.blocks.spec import get_spec
from sigprop.errors import check_choice, check_positive
from sigprop.perf.benchmark import BenchSettings, _as_list, _build_cases, _num_threads
from sigprop.perf.timers import DTYPES, check_device, timed
from sigprop.probes import measure
from sigprop.probes.direct import reference_metrics

#: Probe cadences considered for the default (one probe pass every N training steps).
CADENCES = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
#: Largest probe overhead (fraction of training time) the default cadence may cost.
PROBE_BUDGET = 0.03


def default_cadence(overhead_per_step: float, budget: float = PROBE_BUDGET) -> int:
    """Smallest cadence N in CADENCES with probe_time / (N * step_time) <= budget."""
    for n in CADENCES:
        if overhead_per_step / n <= budget:
            return n
    return CADENCES[-1]


def probe_overhead(
    blocks: str | Sequence[str] = ("pre-ln", "sas-p"),
    *,
    depth: int = 6,
    width: int = 256,
    heads: int = 4,
    seq: int = 128,
    batch: int = 16,
    probe_batch: int = 8,
    vocab: int = 8192,
    dtype: str = "fp32",
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 2,
    budget: float = PROBE_BUDGET,
    threads: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Cost of one probe pass (`sigprop.probes.measure(model, idx)` on a fixed probe batch) relative to
    one training step, interleaved; `cadence` is the smallest N with overhead <= budget at one probe
    every N steps. `probe_before_*`: the same pass on the kernel path (before issue 30). One row per block.
    """
    with _num_threads(threads):
        return _probe_overhead(blocks, depth, width, heads, seq, batch, probe_batch, vocab, dtype, device, repeats,
                               warmup, budget, progress)


def _probe_overhead(blocks, depth, width, heads, seq, batch, probe_batch, vocab, dtype, device, repeats, warmup,
                    budget, progress) -> pd.DataFrame:
    names = [get_spec(b).name for b in _as_list(blocks)]
    check_choice("dtype", dtype, DTYPES)
    for name, value in (("repeats", repeats), ("batch", batch), ("probe_batch", probe_batch), ("seq", seq)):
        check_positive(name, value)
    dev = check_device(device)
    s = BenchSettings(tuple(names), depth, width, heads, (seq,), batch, batch * seq, vocab, "decoder", dtype,
                      device, ("train",), repeats, warmup, False, False, False, names[0], 0, torch.get_num_threads())
    cases = _build_cases(s, dev)
    gen = torch.Generator().manual_seed(1)
    probe_idx = torch.randint(0, vocab, (probe_batch, seq), generator=gen).to(dev)
    probes = {c.block: (lambda m=c.model: measure(m, probe_idx)) for c in cases}
    probe_times: dict[str, list[float]] = {c.block: [] for c in cases}
    before_times: dict[str, list[float]] = {c.block: [] for c in cases}

    def before(block: str) -> None:
        with reference_metrics():
            probes[block]()


    from rich.progress import Progress

    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("probe overhead", total=len(cases) * (warmup + repeats))
        for c in cases:
            for _ in range(warmup):
                c.step()
                probes[c.block]()
                bar.advance(task)
        for _ in range(repeats):
            for c in cases:
                c.times.append(timed(c.step, dev))
                probe_times[c.block].append(timed(probes[c.block], dev))
                before_times[c.block].append(timed(lambda b=c.block: before(b), dev))
                bar.advance(task)
    rows = []
    for c in cases:
        t_step, t_probe = statistics.median(c.times), statistics.median(probe_times[c.block])
        t_before = statistics.median(before_times[c.block])
        n = default_cadence(t_probe / t_step, budget)
        rows.append(
            {
                "block": c.block,
                "step_ms": 1e3 * t_step,
                "probe_ms": 1e3 * t_probe,
                "probe_per_step": t_probe / t_step,
                "cadence": n,
                "overhead": t_probe / (n * t_step),
                "probe_before_ms": 1e3 * t_before,
                "probe_before_per_step": t_before / t_step,
            }
        )
    return pd.DataFrame(rows)
