"""One training run as named steps over a small state: open (model, data, run folder), restore, step, evaluate,
probe, checkpoint, finish. `loop.train` resolves the spec and config and hands over to `Trainer.run`.

The state that a checkpoint carries (and a resume restores bit for bit) is `State`: the step, the clocks, the last
eval loss, the recent train losses and the divergence guard's window.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sigprop.blocks import BlockSpec, ModelConfig, build_model
from sigprop.errors import SigpropError
from sigprop.probes import UpdateRatios, gains, measure, training_rows
from sigprop.probes.layers import points_or_none, unwrap
from sigprop.runs import CONFIG, ENV, METRICS, PROBES, SUMMARY, RunDir
from sigprop.training import distributed as ddp
from sigprop.training.batches import batch_for_step, count_targets, micro_batches
from sigprop.training.checkpoint import keep_steps, load_checkpoint, restore, rng_state, save_checkpoint, save_kept
from sigprop.training.config import TrainConfig
from sigprop.training.env import env_info, use_bf16
from sigprop.training.guard import Guard, StopFlag
from sigprop.training.loggers import metric_scalars, open_loggers, probe_scalars
from sigprop.training.optim import make_optimizer
from sigprop.training.quant import w8a8
from sigprop.training.resolve import spec_record
from sigprop.training.schedule import lr_at

#: The fixed validation batches used for eval loss use this seed offset (distinct from the probe rows).
EVAL_SEED = 1_000


class TrainingDiverged(SigpropError):
    """The divergence guard stopped the run (loss or gradient blew up); the run folder says where."""


@dataclass
class Run:
    """A finished (or stopped) run: its folder, status and summary; metrics and probes read from disk."""

    path: Path
    status: str  # done | interrupted | diverged
    step: int
    summary: dict = field(default_factory=dict)
    rank: int = 0  # under torchrun: the process that returned it (only rank 0 wrote the folder)

    def metrics(self) -> pd.DataFrame:
        return RunDir(self.path).metrics()

    def probes(self) -> pd.DataFrame:
        return RunDir(self.path).probes()

    @property
    def final_eval_loss(self) -> float | None:
        return self.summary.get("final_eval_loss")


def branch_kinds(model: nn.Module) -> tuple[str, ...]:
    """The branch-output probe points a model has ('attn_out', 'mlp_out'; sigprop models have both)."""
    points = points_or_none(unwrap(model))
    return tuple(k for k in ("attn_out", "mlp_out") if points is not None and points.of_kind(k))


@dataclass
class State:
    """What a checkpoint carries besides weights, optimiser and RNG."""

    step: int = 0
    clock: dict = field(default_factory=lambda: {"time": 0.0, "wall": 0.0, "tokens": 0, "probe_time": 0.0, "eval_time": 0.0,
                                                 "probes": 0})
    last_eval: float | None = None
    losses: list[float] = field(default_factory=list)  # recent train losses for the summary (last 20 kept)
    guard: Guard | None = None

    def extra(self) -> dict:
        return {"clock": dict(self.clock), "last_eval": self.last_eval, "losses": self.losses[-20:], "guard": self.guard.state()}

    def recent_loss(self) -> float | None:
        tail = self.losses[-max(1, min(20, len(self.losses))):]
        return sum(tail) / len(tail) if tail else None


def note(msg: str, dist: ddp.Dist) -> None:
    if dist.main:
        print(f"note: {msg}", file=sys.stderr, flush=True)


class Trainer:
    """One run's model, data, optimiser, folder and state; `run()` trains it to the end or to a clean stop."""

    def __init__(self, spec: BlockSpec, cfg: TrainConfig, out: Path, run: RunDir, dist: ddp.Dist, data, quiet: bool,
                 callback, held: contextlib.ExitStack, trackers=(), malloc_tuned: bool = False):
        self.spec, self.cfg, self.out, self.run_dir, self.dist, self.data = spec, cfg, out, run, dist, data
        self.quiet, self.callback, self.held, self.trackers, self.malloc_tuned = quiet, callback, held, trackers, malloc_tuned
        if data.seq_len != cfg.seq_len:
            raise SigpropError(f"data has seq_len {data.seq_len} but the run asks for {cfg.seq_len}; accepted: data built with seq_len={cfg.seq_len}")
        mcfg = ModelConfig(depth=cfg.depth, width=cfg.width, heads=cfg.heads, vocab_size=data.vocab_size, context=cfg.seq_len, kind=cfg.kind)
        self.model = build_model(spec, mcfg, seed=cfg.seed).to(dist.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.record = {"block": spec.name, "spec": spec_record(spec), "model": mcfg.__dict__, "train": cfg.to_dict(), "data": data.fingerprint}
        self.state = State(guard=Guard(cfg.diverge_loss_ratio, cfg.diverge_grad_ratio, cfg.diverge_window))
        self.bf16 = use_bf16(cfg, dist.device)
        self.mask = {"mask": data.special["mask"], "special_ids": tuple(data.special.values())} if cfg.kind == "encoder" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.renormalize = self.model.renormalize_ if spec.norm_position == "sphere" else None  # nGPT: rows on the sphere
        self.probe_idx = data.probe_batch(cfg.probe_batch, seed=cfg.seed).to(dist.device)[:, :-1] if cfg.probe_every else None
        self.updates = UpdateRatios() if cfg.probe_grad else None
        self.branches = branch_kinds(self.model) if cfg.probe_branches else ()
        self.keep = set(keep_steps(cfg.steps, cfg.keep_checkpoints))
        net: nn.Module = self.model
        if cfg.compile:
            net = torch.compile(net)
        if dist.enabled:
            net = DistributedDataParallel(net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        self.net = net

    def autocast(self):
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # -- restore and prepare ----------------------------------------------------------------------------------
    def restore(self, resume: bool) -> None:
        """Continue from the folder's checkpoint (bit for bit on CPU); records past it are dropped, to be replayed."""
        st, run = self.state, self.run_dir
        if resume:
            ck = load_checkpoint(run.checkpoint) if run.checkpoint.exists() else None
            if ck is not None:
                if ck["config"].get("data", {}).get("sha256") != self.data.fingerprint.get("sha256"):
                    raise SigpropError(f"cannot resume {str(self.out)!r}: the data differs from the run's (fingerprint mismatch); accepted: the same data, or --overwrite")
                st.step = restore(ck, self.model, self.optimizer, run.checkpoint)
                st.clock.update({k: v for k, v in ck["extra"].get("clock", {}).items() if k in st.clock})
                st.last_eval, st.losses = ck["extra"].get("last_eval"), list(ck["extra"].get("losses", []))
                st.guard = Guard(st.guard.loss_ratio, st.guard.grad_ratio, st.guard.window, **ck["extra"].get("guard", {}))
            else:
                note(f"{self.out} has no checkpoint (the run stopped before its first one): training it again from step 0", self.dist)
            if self.dist.main:
                run.truncate(st.step)  # records past the checkpoint are replayed: each step is recorded once
                run.drop_kept(after=st.step)  # and so are kept snapshots past it
        env = {**env_info(self.dist.device, self.dist.world_size), "malloc_tuned": self.malloc_tuned}
        if self.dist.main:
            if not resume or not run.has(CONFIG):
                run.write_json(CONFIG, self.record)
            sessions = (run.read_json(ENV).get("sessions", []) if resume and run.has(ENV) else []) + [{"started": env["started"], "from_step": st.step}]
            run.write_json(ENV, {**env, "sessions": sessions})
            if run.has(SUMMARY):
                (run.path / SUMMARY).unlink()
        trackers = list(self.trackers) if self.dist.main and st.step < self.cfg.steps else []
        self.logger = self.held.enter_context(contextlib.closing(open_loggers(trackers, self.out, self.out.name, self.record, st.step)))

    # -- the named steps ---------------------------------------------------------------------------------------
    def evaluate(self, quantised: bool = False) -> float:
        """Mean eval loss over the fixed validation batches (quantised: under W8A8 fake quantisation)."""
        t0 = time.perf_counter()
        cfg, model = self.cfg, self.model
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), self.autocast(), w8a8(model) if quantised else contextlib.nullcontext():
            for i in range(cfg.eval_batches):
                x, y = batch_for_step(self.data, cfg, "val", i, self.mask, cfg.seed + EVAL_SEED)
                _, loss = model(x.to(self.dist.device), y.to(self.dist.device))
                n = count_targets(y)
                total, count = total + float(loss) * n, count + n
        model.train()
        self.state.clock["eval_time"] += time.perf_counter() - t0
        return total / max(count, 1)

    def probe(self, at: int) -> None:
        """The probe rows of the fixed probe batch at step `at` (plus gains, gradients, branches, outliers as asked)."""
        t0 = time.perf_counter()
        model, idx, cfg = self.model, self.probe_idx, self.cfg
        m = measure(model, idx, outliers=cfg.probe_outliers).metrics.assign(step=at, source="probe")
        g = gains(model).assign(step=at, source="gain", module="block")
        extra = [training_rows(model, idx, self.updates).assign(step=at)] if self.updates is not None else []
        extra += [measure(model, idx, layers=f"blocks.*.hook_{kind}").metrics.assign(step=at, source=kind) for kind in self.branches]
        rows = pd.concat([m, g, *extra], ignore_index=True)[["step", "source", "layer", "module", "metric", "head", "value"]]
        self.run_dir.append(PROBES, rows.to_dict(orient="records"))
        if self.logger.loggers:  # tagging every row costs ~10 ms a pass at the cpu scale: only for a tracker
            self.logger.log_scalars(at, probe_scalars(rows))
        self.state.clock["probe_time"] += time.perf_counter() - t0
        self.state.clock["probes"] += 1

    def snapshot(self) -> dict:
        """What a checkpoint after the current step records besides model and optimiser (taken now)."""
        return {"step": self.state.step, "rng": rng_state(), "extra": self.state.extra()}

    def checkpoint(self, snap: dict) -> None:
        if self.dist.main:
            save_checkpoint(self.run_dir.checkpoint, self.model, self.optimizer, snap["step"], self.record, snap["extra"], rng=snap["rng"])

    def train_step(self, stop: StopFlag) -> tuple[dict, float]:
        """One optimiser step over the global batch (micro-batches, DDP, clipping, the guard): (record, stop votes).
        A blown-up step raises TrainingDiverged with the last safe checkpoint named."""
        cfg, dist, st = self.cfg, self.dist, self.state
        t0 = time.perf_counter()
        lr = lr_at(st.step, lr=cfg.lr, steps=cfg.steps, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, min_lr=cfg.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        x, y = batch_for_step(self.data, cfg, "train", st.step, self.mask, cfg.seed)
        n_global = count_targets(y)
        micro = micro_batches(x, y, dist.rank, dist.world_size, cfg.grad_accum)
        loss_sum = 0.0
        for i, (xm, ym) in enumerate(micro):
            sync = i == len(micro) - 1 or not dist.enabled
            with (contextlib.nullcontext() if sync else self.net.no_sync()), self.autocast():
                _, loss = self.net(xm.to(dist.device), ym.to(dist.device))
            # DDP averages gradients over ranks, so weight by world * (targets here / targets in the global batch):
            # the gradient is then exactly that of the global batch's mean loss.
            w = count_targets(ym) / max(n_global, 1)
            (loss * (w * dist.world_size)).backward()
            loss_sum += float(loss.detach()) * w
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        loss_all, stop_votes = ddp.all_sum([loss_sum, 1.0 if stop.set else 0.0], dist)
        why = st.guard.check(loss_all, grad_norm)  # the same numbers on every rank, so the same verdict
        if why is not None:
            self.optimizer.zero_grad(set_to_none=True)
            st.clock["wall"] += time.perf_counter() - self.wall0
            self.finish("diverged")
            ck = self.run_dir.checkpoint
            where = f"{ck} (step {load_checkpoint(ck)['step']})" if ck.exists() else "none written yet"
            raise TrainingDiverged(f"{why} at step {st.step + 1}; run stopped, last checkpoint from before it kept: {where}")
        if self.pending is not None:  # the weights of the due checkpoint just passed the guard: now it is safe to keep
            self.checkpoint(self.pending)
            self.pending = None
        self.optimizer.step()
        if self.renormalize is not None:
            self.renormalize()
        self.optimizer.zero_grad(set_to_none=True)
        st.step += 1
        dt = time.perf_counter() - t0
        st.clock["time"] += dt
        st.clock["tokens"] += cfg.tokens_per_step
        st.losses.append(loss_all)
        rec = {"step": st.step, "time": st.clock["time"], "tokens": st.clock["tokens"], "lr": lr, "loss": loss_all, "grad_norm": grad_norm}
        return {**rec, "_dt": dt}, stop_votes

    def record_step(self, rec: dict) -> None:
        """Eval and probes on their cadence, the metrics row, the trackers and the kept snapshots of this step."""
        cfg, st, main = self.cfg, self.state, self.dist.main
        dt = rec.pop("_dt")
        if main and (st.step % cfg.eval_every == 0 or st.step == cfg.steps):
            st.last_eval = rec["eval_loss"] = self.evaluate()
        if main and cfg.probe_every and (st.step % cfg.probe_every == 0 or st.step == cfg.steps):
            self.probe(st.step)
        now = time.perf_counter()
        st.clock["wall"] += now - self.wall0
        self.wall0 = now
        rec["wall"] = st.clock["wall"]
        if main:
            self.run_dir.append(METRICS, rec)
            self.logger.log_scalars(st.step, metric_scalars({**rec, "tokens_per_s": cfg.tokens_per_step / dt}))
            if st.step in self.keep:
                save_kept(self.run_dir, self.model, st.step)

    def finish(self, status: str) -> Run:
        """The run's summary.json (with the W8A8 eval when asked) and the Run that train() returns."""
        st, cfg, dist = self.state, self.cfg, self.dist
        clock = st.clock
        summary = {
            "block": self.spec.name, "status": status, "step": st.step, "steps": cfg.steps, "params": self.model.num_params(),
            "final_eval_loss": st.last_eval, "final_train_loss": st.recent_loss(), "tokens": clock["tokens"],
            "train_time_s": clock["time"], "wall_time_s": clock["wall"],
            "tokens_per_s": clock["tokens"] / clock["time"] if clock["time"] else None,
            "probe_time_frac": clock["probe_time"] / clock["wall"] if clock["wall"] else None,
            **probe_cost(clock, st.step),
            "eval_time_frac": clock["eval_time"] / clock["wall"] if clock["wall"] else None,
            "precision": "bf16" if self.bf16 else "fp32", "world_size": dist.world_size, "scale": cfg.scale,
        }
        if cfg.quant_eval:  # the sequel's practical consequence: the same eval with int8 weights and activations
            summary["final_eval_loss_w8a8"] = self.evaluate(quantised=True) if status == "done" and dist.main else None
        if dist.main:
            self.run_dir.write_json(SUMMARY, summary)
        return Run(self.out, status, st.step, summary, rank=dist.rank)

    # -- the whole run ------------------------------------------------------------------------------------------
    def run(self) -> Run:
        cfg, st, dist = self.cfg, self.state, self.dist
        if st.step >= cfg.steps:  # resuming a finished run: nothing to train; its summary is written again, unchanged
            if dist.main and not self.quiet:
                print(f"{self.out}: already finished ({st.step}/{cfg.steps} steps); nothing to train. "
                      "Use --overwrite to train it again.", file=sys.stderr, flush=True)
            return self.finish("done")
        self.wall0 = time.perf_counter()
        if dist.main and st.step == 0 and cfg.probe_every:
            self.probe(0)
        if dist.main and st.step == 0 and 0 in self.keep:
            save_kept(self.run_dir, self.model, 0)
        self.model.train()
        bar = progress_bar(cfg, st.step, self.quiet or not dist.main)
        self.pending: dict | None = None
        with StopFlag() as stop, bar:
            task = bar.add_task("train", total=cfg.steps, completed=st.step, loss=fmt(st.recent_loss()), eval=fmt(st.last_eval), tps=0.0)
            while st.step < cfg.steps:
                rec, stop_votes = self.train_step(stop)
                self.record_step(rec)
                bar.update(task, completed=st.step, loss=fmt(rec["loss"]), eval=fmt(st.last_eval), tps=st.clock["tokens"] / st.clock["time"])
                if self.callback is not None:
                    self.callback(st.step, rec)
                if stop_votes > 0 or stop.set:
                    self.checkpoint(self.snapshot())
                    if dist.main:
                        name = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
                        print(f"stopped by {name} at step {st.step}/{cfg.steps}; checkpoint saved. Resume with: "
                              f"sigprop train --out {self.out} --resume", file=sys.stderr, flush=True)
                    return self.finish("interrupted")
                if st.step == cfg.steps:
                    self.checkpoint(self.snapshot())
                elif st.step % cfg.ckpt_every == 0:
                    self.pending = self.snapshot()  # written once the next step's loss shows these weights have not blown up
        return self.finish("done")


def probe_cost(clock: dict, steps: int) -> dict:
    """What the probes cost this run: passes, seconds per pass and one pass as a fraction of a training step (None
    where unknown: no pass yet, or a checkpoint from before passes were counted)."""
    passes = clock.get("probes", 0)
    per_pass = clock["probe_time"] / passes if passes else None
    step = clock["time"] / steps if steps else None
    return {"probe_passes": passes, "probe_pass_s": per_pass,
            "probe_per_step": per_pass / step if per_pass is not None and step else None}


def fmt(x: float | None) -> str:
    """A loss for the progress bar: '–' before the first one (not 'nan')."""
    return "–" if x is None else f"{x:.3f}"


def progress_bar(cfg: TrainConfig, step: int, quiet: bool):
    """rich bar: step, loss, eval loss, tokens/s, ETA; a no-op stand-in when quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TextColumn("eval {task.fields[eval]}"), TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeElapsedColumn(),
        TimeRemainingColumn(), disable=quiet, transient=False,
    )
