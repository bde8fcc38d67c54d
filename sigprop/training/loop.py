"""The training loop: AdamW with the paper's groups, warm-up + linear decay, clipping, accumulation,
bf16 autocast, optional torch.compile and DDP, eval and probes on a cadence, and a run directory that
is never lost or mixed (one writer per run folder, atomic checkpoints, clean stop on Ctrl-C/SIGTERM, and a
divergence guard that stops a blown-up run with its last checkpoint from before the blow-up).

    run = train("sas-p", scale="cpu", out="runs/sas-p", steps=300)
    run.metrics()      # DataFrame: step, time, tokens, lr, loss, grad_norm, eval_loss
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from sigprop.blocks import BlockSpec
from sigprop.data import load_data
from sigprop.errors import SigpropError
from sigprop.perf.cpu import tune_malloc
from sigprop.runs import CONFIG, RunDir, RunLock
from sigprop.training import distributed as ddp
from sigprop.training.config import TrainConfig
from sigprop.training.loggers import parse_log
from sigprop.training.resolve import resolve
from sigprop.training.trainer import EVAL_SEED, Run, Trainer, TrainingDiverged, branch_kinds, fmt as _fmt

__all__ = ["EVAL_SEED", "Run", "TrainingDiverged", "branch_kinds", "train", "_fmt"]


def train(
    block: str | BlockSpec | None = "pre-ln",
    scale: str | TrainConfig | None = "cpu",
    out: str | Path | None = None,
    *,
    sets: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    data=None,
    cache_dir: str | Path | None = None,
    callback: Callable[[int, dict], None] | None = None,
    log: str | list[str] | None = None,
    **overrides: object,
) -> Run:
    """Train `block` at `scale` (any TrainConfig field overrides it) into the run directory `out`.

    resume=True continues `out` from its checkpoint (bit-for-bit on CPU); overwrite=True replaces it.
    Under torchrun every rank calls this; only rank 0 writes `out` and prints. `callback(step, record)`
    is called after every optimiser step (tests use it to interrupt a run). log: "tensorboard", "wandb" or both
    comma-separated: the records also go to that tracker (sigprop.training.loggers), under `out`.
    """
    trackers = parse_log(log)  # a bad name or a missing package: one line now, not after the data is built
    out = Path(out) if out is not None else Path("runs") / (block.name if isinstance(block, BlockSpec) else str(block or "run"))
    stored = RunDir(out).read_json(CONFIG) if resume and (out / CONFIG).exists() else None
    spec, cfg = resolve(block, scale, sets, overrides, stored)
    dist = ddp.setup(cfg.device)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with contextlib.ExitStack() as held:  # the run folder's lock, taken by rank 0 in _open_run_dir
            return _train(spec, cfg, out, dist, resume, overwrite, quiet, data, cache_dir, callback, held, trackers)
    finally:
        torch.set_num_threads(threads)
        ddp.teardown(dist)


def _open_run_dir(out: Path, resume: bool, overwrite: bool, dist: ddp.Dist, held: contextlib.ExitStack) -> RunDir:
    """Rank 0 locks the folder (held until `held` closes), checks and prepares it; the other ranks learn
    whether that worked."""
    err = None
    if dist.main:
        try:
            held.enter_context(RunLock(out))  # a second writer (train, compare, reproduce) stops here
            RunDir.open(out, resume=resume, overwrite=overwrite)  # checks and prepares the folder
        except SigpropError as e:
            err = e
    ok = ddp.broadcast_float(0.0 if err else 1.0, dist)
    if err:
        raise err
    if not ok:
        raise SigpropError(f"rank 0 could not open the run directory {str(out)!r}")
    return RunDir(out)


def _load_data(cfg: TrainConfig, quiet: bool, dist: ddp.Dist, cache_dir):
    """Rank 0 builds the token cache first; the others then open it (no racing builds)."""
    def load(progress: bool):
        return load_data(cfg.source, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, cache_dir=cache_dir, progress=progress, max_bytes=cfg.max_bytes)

    if not dist.enabled:
        return load(not quiet)
    data = load(not quiet) if dist.main else None
    ddp.broadcast_float(1.0, dist)  # barrier
    return data if data is not None else load(False)


def _train(spec, cfg: TrainConfig, out: Path, dist: ddp.Dist, resume, overwrite, quiet, data, cache_dir, callback, held, trackers=()) -> Run:
    """Open the run folder (locked), tune malloc, load the data, then hand over to the Trainer's named steps."""
    run = _open_run_dir(out, resume, overwrite, dist, held)
    malloc_tuned = dist.device.type == "cpu" and tune_malloc()  # ~10% per CPU step: no page faults on big activations
    data = data if data is not None else _load_data(cfg, quiet, dist, cache_dir)
    trainer = Trainer(spec, cfg, out, run, dist, data, quiet, callback, held, trackers, malloc_tuned)
    trainer.restore(resume)
    return trainer.run()
