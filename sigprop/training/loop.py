"""The training loop: AdamW with the paper's groups, warm-up + linear decay, clipping, accumulation,
bf16 autocast, optional torch.compile and DDP, eval and probes on a cadence, and a run directory that
is never lost or mixed (one writer per run folder, atomic checkpoints, clean stop on Ctrl-C/SIGTERM, and a
divergence guard that stops a blown-up run with its last checkpoint from before the blow-up).

    run = train("sas-p", scale="cpu", out="runs/sas-p", steps=300)
    run.metrics()      # DataFrame: step, time, tokens, lr, loss, grad_norm, eval_loss
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sigprop.blocks import BlockSpec, ModelConfig, build_model
from sigprop.cpu import tune_malloc
from sigprop.errors import SigpropError
from sigprop.runs import CONFIG, ENV, METRICS, PROBES, SUMMARY, RunDir, RunLock
from sigprop.training import distributed as ddp
from sigprop.training.batches import batch_for_step, count_targets, micro_batches
from sigprop.training.checkpoint import keep_steps, load_checkpoint, restore, rng_state, save_checkpoint, save_kept
from sigprop.training.config import TrainConfig
from sigprop.training.env import env_info, use_bf16
from sigprop.training.guard import Guard, StopFlag
from sigprop.training.loggers import metric_scalars, open_loggers, parse_log, probe_scalars
from sigprop.training.optim import make_optimizer
from sigprop.training.quant import w8a8
from sigprop.training.resolve import resolve, spec_record
from sigprop.training.schedule import lr_at

#: The fixed validation batches used for eval loss use this seed offset (distinct from the probe rows).
EVAL_SEED = 1_000


class TrainingDiverged(SigpropError):
    """Loss or gradient norm became NaN/inf or blew up (sigprop.training.guard): the run stops and its
    last checkpoint from before the blow-up is kept."""


@dataclass
class Run:
    """A finished (or stopped) run: its folder, status and summary; metrics and probes read from disk."""

    path: Path
    status: str  # done | interrupted
    step: int
    summary: dict = field(default_factory=dict)
    rank: int = 0  # under torchrun: only rank 0 evaluates, so only its summary has the eval loss

    def metrics(self) -> pd.DataFrame:
        return RunDir(self.path).metrics()

    def probes(self) -> pd.DataFrame:
        return RunDir(self.path).probes()

    @property
    def final_eval_loss(self) -> float | None:
        return self.summary.get("final_eval_loss")


def branch_kinds(model: nn.Module) -> tuple[str, ...]:
    """The branch-output probe points a model has ('attn_out', 'mlp_out'; sigprop models have both)."""
    from sigprop.probes.layers import points_or_none, unwrap

    points = points_or_none(unwrap(model))
    return tuple(k for k in ("attn_out", "mlp_out") if points is not None and points.of_kind(k))


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


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
    from sigprop.data import load_data

    def load(progress: bool):
        return load_data(cfg.source, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, cache_dir=cache_dir, progress=progress, max_bytes=cfg.max_bytes)

    if not dist.enabled:
        return load(not quiet)
    data = load(not quiet) if dist.main else None
    ddp.broadcast_float(1.0, dist)  # barrier
    return data if data is not None else load(False)


def _note(msg: str, dist: ddp.Dist) -> None:
    if dist.main:
        print(f"note: {msg}", file=sys.stderr, flush=True)


def _train(spec, cfg: TrainConfig, out: Path, dist: ddp.Dist, resume, overwrite, quiet, data, cache_dir, callback, held, trackers=()) -> Run:
    run = _open_run_dir(out, resume, overwrite, dist, held)
    malloc_tuned = dist.device.type == "cpu" and tune_malloc()  # ~10% per CPU step: no page faults on big activations
    data = data if data is not None else _load_data(cfg, quiet, dist, cache_dir)
    if data.seq_len != cfg.seq_len:
        raise SigpropError(f"data has seq_len {data.seq_len} but the run asks for {cfg.seq_len}; accepted: data built with seq_len={cfg.seq_len}")
    mcfg = ModelConfig(depth=cfg.depth, width=cfg.width, heads=cfg.heads, vocab_size=data.vocab_size, context=cfg.seq_len, kind=cfg.kind)
    model = build_model(spec, mcfg, seed=cfg.seed).to(dist.device)
    optimizer = make_optimizer(model, cfg)
    record = {"block": spec.name, "spec": spec_record(spec), "model": mcfg.__dict__, "train": cfg.to_dict(), "data": data.fingerprint}

    step, clock = 0, {"time": 0.0, "wall": 0.0, "tokens": 0, "probe_time": 0.0, "eval_time": 0.0}
    last_eval: float | None = None
    losses: list[float] = []  # train losses of this session (plus the checkpoint's recent ones) for the summary
    guard = Guard(cfg.diverge_loss_ratio, cfg.diverge_grad_ratio, cfg.diverge_window)
    if resume:
        ck = load_checkpoint(run.checkpoint) if run.checkpoint.exists() else None
        if ck is not None:
            if ck["config"].get("data", {}).get("sha256") != data.fingerprint.get("sha256"):
                raise SigpropError(f"cannot resume {str(out)!r}: the data differs from the run's (fingerprint mismatch); accepted: the same data, or --overwrite")
            step = restore(ck, model, optimizer, run.checkpoint)
            clock.update({k: v for k, v in ck["extra"].get("clock", {}).items() if k in clock})
            last_eval, losses = ck["extra"].get("last_eval"), list(ck["extra"].get("losses", []))
            guard = Guard(guard.loss_ratio, guard.grad_ratio, guard.window, **ck["extra"].get("guard", {}))
        else:
            _note(f"{out} has no checkpoint (the run stopped before its first one): training it again from step 0", dist)
        if dist.main:
            run.truncate(step)  # records past the checkpoint are replayed: each step is recorded once
            run.drop_kept(after=step)  # and so are kept snapshots past it
    env = {**env_info(dist.device, dist.world_size), "malloc_tuned": malloc_tuned}
    if dist.main:
        if not resume or not run.has(CONFIG):
            run.write_json(CONFIG, record)
        sessions = (run.read_json(ENV).get("sessions", []) if resume and run.has(ENV) else []) + [{"started": env["started"], "from_step": step}]
        run.write_json(ENV, {**env, "sessions": sessions})
        if run.has(SUMMARY):
            (run.path / SUMMARY).unlink()

    keep = set(keep_steps(cfg.steps, cfg.keep_checkpoints))
    logger = held.enter_context(contextlib.closing(open_loggers(list(trackers) if dist.main and step < cfg.steps else [], out, out.name, record, step)))
    bf16 = use_bf16(cfg, dist.device)
    autocast = lambda: torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    net: nn.Module = model
    if cfg.compile:
        net = torch.compile(net)
    if dist.enabled:
        net = DistributedDataParallel(net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    mask = {"mask": data.special["mask"], "special_ids": tuple(data.special.values())} if cfg.kind == "encoder" else None
    params = [p for p in model.parameters() if p.requires_grad]
    renormalize = model.renormalize_ if spec.norm_position == "sphere" else None
    probe_idx = data.probe_batch(cfg.probe_batch, seed=cfg.seed).to(dist.device)[:, :-1] if cfg.probe_every else None

    def evaluate(quantised: bool = False) -> float:
        """Mean eval loss over the fixed validation batches (quantised: under W8A8 fake quantisation)."""
        t0 = time.perf_counter()
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), autocast(), w8a8(model) if quantised else contextlib.nullcontext():
            for i in range(cfg.eval_batches):
                x, y = batch_for_step(data, cfg, "val", i, mask, cfg.seed + EVAL_SEED)
                _, loss = model(x.to(dist.device), y.to(dist.device))
                n = count_targets(y)
                total, count = total + float(loss) * n, count + n
        model.train()
        clock["eval_time"] += time.perf_counter() - t0
        return total / max(count, 1)

    from sigprop.probes import UpdateRatios, gains, measure, training_rows

    updates = UpdateRatios() if cfg.probe_grad else None
    branches = branch_kinds(model) if cfg.probe_branches else ()

    def run_probes(at: int) -> None:
        t0 = time.perf_counter()
        m = measure(model, probe_idx, outliers=cfg.probe_outliers).metrics.assign(step=at, source="probe")
        g = gains(model).assign(step=at, source="gain", module="block")
        extra = [training_rows(model, probe_idx, updates).assign(step=at)] if updates is not None else []
        extra += [measure(model, probe_idx, layers=f"blocks.*.hook_{kind}").metrics.assign(step=at, source=kind)
                  for kind in branches]
        rows = pd.concat([m, g, *extra], ignore_index=True)
        rows = rows[["step", "source", "layer", "module", "metric", "head", "value"]]
        run.append(PROBES, rows.to_dict(orient="records"))
        logger.log_scalars(at, probe_scalars(rows))
        clock["probe_time"] += time.perf_counter() - t0

    def snapshot(at: int) -> dict:
        """What a checkpoint after `at` steps records besides model and optimiser (taken at that step)."""
        return {"step": at, "rng": rng_state(), "extra": {"clock": dict(clock), "last_eval": last_eval, "losses": losses[-20:], "guard": guard.state()}}

    def checkpoint(snap: dict) -> None:
        if dist.main:
            save_checkpoint(run.checkpoint, model, optimizer, snap["step"], record, snap["extra"], rng=snap["rng"])

    def finish(status: str, at: int, last_eval: float | None) -> Run:
        summary = {
            "block": spec.name, "status": status, "step": at, "steps": cfg.steps, "params": model.num_params(),
            "final_eval_loss": last_eval, "final_train_loss": recent_loss(), "tokens": clock["tokens"],
            "train_time_s": clock["time"], "wall_time_s": clock["wall"],
            "tokens_per_s": clock["tokens"] / clock["time"] if clock["time"] else None,
            "probe_time_frac": clock["probe_time"] / clock["wall"] if clock["wall"] else None,
            "eval_time_frac": clock["eval_time"] / clock["wall"] if clock["wall"] else None,
            "precision": "bf16" if bf16 else "fp32", "world_size": dist.world_size, "scale": cfg.scale,
        }
        if cfg.quant_eval:  # the sequel's practical consequence: the same eval with int8 weights and activations
            summary["final_eval_loss_w8a8"] = evaluate(quantised=True) if status == "done" and dist.main else None
        if dist.main:
            run.write_json(SUMMARY, summary)
        return Run(out, status, at, summary, rank=dist.rank)

    def recent_loss() -> float | None:
        tail = losses[-max(1, min(20, len(losses))):]
        return sum(tail) / len(tail) if tail else None

    if step >= cfg.steps:  # resuming a finished run: nothing to train; its summary is written again, unchanged
        if dist.main and not quiet:
            print(f"{out}: already finished ({step}/{cfg.steps} steps); nothing to train. "
                  "Use --overwrite to train it again.", file=sys.stderr, flush=True)
        return finish("done", step, last_eval)
    wall0 = time.perf_counter()
    if dist.main and step == 0 and cfg.probe_every:
        run_probes(0)
    if dist.main and step == 0 and 0 in keep:
        save_kept(run, model, 0)
    model.train()
    bar = _progress(cfg, step, quiet or not dist.main)
    pending: dict | None = None
    with StopFlag() as stop, bar:
        task = bar.add_task("train", total=cfg.steps, completed=step, loss=_fmt(recent_loss()), eval=_fmt(last_eval), tps=0.0)
        while step < cfg.steps:
            t0 = time.perf_counter()
            lr = lr_at(step, lr=cfg.lr, steps=cfg.steps, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, min_lr=cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            x, y = batch_for_step(data, cfg, "train", step, mask, cfg.seed)
            n_global = count_targets(y)
            micro = micro_batches(x, y, dist.rank, dist.world_size, cfg.grad_accum)
            loss_sum = 0.0
            for i, (xm, ym) in enumerate(micro):
                sync = i == len(micro) - 1 or not dist.enabled
                with (contextlib.nullcontext() if sync else net.no_sync()), autocast():
                    _, loss = net(xm.to(dist.device), ym.to(dist.device))
                # DDP averages gradients over ranks, so weight by world * (targets here / targets in the global batch):
                # the gradient is then exactly that of the global batch's mean loss.
                w = count_targets(ym) / max(n_global, 1)
                (loss * (w * dist.world_size)).backward()
                loss_sum += float(loss.detach()) * w
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            loss_all, stop_votes = ddp.all_sum([loss_sum, 1.0 if stop.set else 0.0], dist)
            why = guard.check(loss_all, grad_norm)  # the same numbers on every rank, so the same verdict
            if why is not None:
                optimizer.zero_grad(set_to_none=True)
                clock["wall"] += time.perf_counter() - wall0
                finish("diverged", step, last_eval)
                where = f"{run.checkpoint} (step {load_checkpoint(run.checkpoint)['step']})" if run.checkpoint.exists() else "none written yet"
                raise TrainingDiverged(f"{why} at step {step + 1}; run stopped, last checkpoint from before it kept: {where}")
            if pending is not None:  # the weights of the due checkpoint just passed the guard: now it is safe to keep
                checkpoint(pending)
                pending = None
            optimizer.step()
            if renormalize is not None:  # nGPT: weight rows back on the sphere after every update
                renormalize()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            clock["time"] += dt
            clock["tokens"] += cfg.tokens_per_step
            losses.append(loss_all)
            rec = {"step": step, "time": clock["time"], "tokens": clock["tokens"], "lr": lr, "loss": loss_all, "grad_norm": grad_norm}
            if dist.main and (step % cfg.eval_every == 0 or step == cfg.steps):
                last_eval = rec["eval_loss"] = evaluate()
            if dist.main and cfg.probe_every and (step % cfg.probe_every == 0 or step == cfg.steps):
                run_probes(step)
            now = time.perf_counter()
            clock["wall"] += now - wall0
            wall0 = now
            rec["wall"] = clock["wall"]
            if dist.main:
                run.append(METRICS, rec)
                logger.log_scalars(step, metric_scalars({**rec, "tokens_per_s": cfg.tokens_per_step / dt}))
                if step in keep:
                    save_kept(run, model, step)
            bar.update(task, completed=step, loss=_fmt(loss_all), eval=_fmt(last_eval), tps=clock["tokens"] / clock["time"])
            if callback is not None:
                callback(step, rec)
            if stop_votes > 0 or stop.set:
                checkpoint(snapshot(step))
                if dist.main:
                    name = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
                    msg = f"stopped by {name} at step {step}/{cfg.steps}; checkpoint saved. Resume with: sigprop train --out {out} --resume"
                    print(msg, file=sys.stderr, flush=True)
                return finish("interrupted", step, last_eval)
            if step == cfg.steps:
                checkpoint(snapshot(step))
            elif step % cfg.ckpt_every == 0:
                pending = snapshot(step)  # written once the next step's loss shows these weights have not blown up
    return finish("done", step, last_eval)


def _fmt(x: float | None) -> str:
    """A loss for the progress bar: '–' before the first one (not 'nan')."""
    return "–" if x is None else f"{x:.3f}"


def _progress(cfg: TrainConfig, step: int, quiet: bool):
    """rich bar: step, loss, eval loss, tokens/s, ETA; a no-op stand-in when quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("eval {task.fields[eval]}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=quiet,
        transient=False,
    )
