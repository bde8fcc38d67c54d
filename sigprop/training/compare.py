"""Train several blocks with the same data order and seed, then tabulate and plot them (paper Figs. 5, 26).

Finished runs in the output folder are reused and unfinished ones resumed, so `compare` can be stopped
and started again without losing work.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from sigprop.blocks import get_spec
from sigprop.data import load_data
from sigprop.errors import SigpropError
from sigprop.perf.flops import BF16_SLOWDOWN, CPU_THREAD_RATE, config_flops_per_token
from sigprop.runs import CONFIG, RunDir, atomic_write_bytes, load_runs
from sigprop.training.config import get_config
from sigprop.training.loop import Run, train
from sigprop.training.resolve import resolve

SUMMARY_COLUMNS = ["block", "params", "final_eval_loss", "tokens_per_s", "train_time_s", "wall_time_s", "steps", "status"]


def compare(
    blocks: list[str],
    scale: str = "cpu",
    out: str | Path = "runs/cmp",
    *,
    sets: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    quiet: bool = False,
    figures: bool = True,
    cache_dir: str | Path | None = None,
    **overrides: object,
) -> pd.DataFrame:
    """Train each block into out/<block> (same seed, same batches), write out/summary.csv and the loss figures.

    Returns the summary table (block, params, final eval loss, tokens/s, train and wall time)."""
    if not blocks:
        raise SigpropError("compare needs at least one block; accepted: e.g. --blocks pre-ln,sas,sas-p")
    if len(set(blocks)) != len(blocks):
        raise SigpropError(f"blocks repeat in {','.join(blocks)}; accepted: each block once")
    specs = [get_spec(b, sets) for b in blocks]  # fail fast on a bad name or knob
    cfg = get_config(scale, **overrides)
    out = Path(out)
    if not quiet:
        print(plan_text(specs, cfg))
    data = None
    runs: list[Run] = []
    for spec in specs:
        path = out / spec.name
        run_dir = RunDir(path)
        summary = run_dir.summary() if run_dir.has(CONFIG) and not overwrite else None
        if summary is not None and summary.get("status") == "done" and summary.get("steps") == cfg.steps:
            # reuse only if the stored run is this exact experiment (resolve() raises otherwise)
            resolve(spec, cfg, (), {}, run_dir.read_json(CONFIG))
            runs.append(Run(path, "done", summary["step"], summary))
            if not quiet:
                print(f"{spec.name}: reusing finished run {path}")
            continue
        if data is None:
            data = load_data(cfg.source, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, cache_dir=cache_dir, progress=not quiet, max_bytes=cfg.max_bytes)
        resume = run_dir.has(CONFIG) and not overwrite
        if not quiet:
            print(f"{spec.name}: {'resuming' if resume else 'training'} -> {path}")
        run = train(spec, cfg, path, resume=resume, overwrite=overwrite, quiet=quiet, data=data)
        runs.append(run)
        if run.status != "done":
            break  # interrupted: stop the whole comparison (resume it by running compare again)
    table = pd.DataFrame([{c: r.summary.get(c) for c in SUMMARY_COLUMNS} for r in runs], columns=SUMMARY_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "summary.csv", table.to_csv(index=False).encode())
    if figures and runs:
        from sigprop.plots.training import plot_loss_curves, plot_training_probes

        loaded = load_runs(*[str(r.path) for r in runs])
        plot_loss_curves(loaded, out / "loss", note=scale_text(cfg))
        if not loaded.probes.empty:
            plot_training_probes(loaded, out / "probes", note=scale_text(cfg))
    return table


def plan_text(specs: list, cfg) -> str:
    """What compare is about to do and roughly how long it takes (model FLOPs at a typical one-thread CPU rate), and
    the warning the demo scale needs: its runs end inside SAS's and SAS-P's early plateau."""
    threads = cfg.threads or torch.get_num_threads()
    rate = CPU_THREAD_RATE * threads / (BF16_SLOWDOWN if cfg.precision == "bf16" else 1.0)
    minutes = [config_flops_per_token(s, cfg) * cfg.steps * cfg.tokens_per_step / rate / 60 for s in specs]
    text = (f"{len(specs)} block(s) x {cfg.steps} steps at {cfg.depth}x{cfg.width} (scale {cfg.scale}): roughly "
            f"{sum(minutes):.0f} min with {threads} thread(s) ({min(minutes):.0f}-{max(minutes):.0f} min per block at "
            f"{CPU_THREAD_RATE:.1e} model FLOP/s per thread, an AVX2 EPYC's rate; AVX-512 CPUs ran 2-3x faster)")
    if cfg.scale == "demo":
        text += ("\nnote: the demo scale ends inside SAS's and SAS-P's early plateau, where they still trail Pre-LN; "
                 "the paper's question is answered at --scale cpu")
    return text


def scale_text(cfg) -> str:
    return (f"scale {cfg.scale}: {cfg.depth}x{cfg.width}, {cfg.heads} heads, V={cfg.vocab_size}, T={cfg.seq_len}, "
            f"batch {cfg.batch_size}, {cfg.steps} steps, lr {cfg.lr:g}, data {cfg.source}")
