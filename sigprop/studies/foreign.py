"""`analyze` of models sigprop did not build (any nn.Module, pretrained checkpoints) and of a training run's checkpoints,
plus the backward metrics every analysis shares (`grad_frames`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import torch
from rich.progress import track
from torch import nn

from sigprop.blocks import BlockSpec, ModelConfig, build_model
from sigprop.data import load_data
from sigprop.errors import SigpropError, check_choice, check_positive
from sigprop.probes import Probe, cosine_kernel, measure, probe_points
from sigprop.runs import CONFIG, RunDir
from sigprop.studies.pretrained import Loaded, load_pretrained, model_tokens, probe_loaded, width_of
from sigprop.studies.result import Analysis, verdict
from sigprop.studies.theory import propagate_grad
from sigprop.training.checkpoint import load_checkpoint, load_kept
from sigprop.training.resolve import stored_run

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def steps(items: list, description: str, enabled: bool, name=str):
    """Iterate with progress on stderr: a rich bar on a terminal; one line per item ('3/8 sas-p, 41 s') when
    stderr is a pipe or a file, where a live bar would show nothing."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from track(items, description=description, transient=True)
        return
    t0 = time.perf_counter()
    for i, item in enumerate(items, 1):
        print(f"{description}: {i}/{len(items)} {name(item)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        yield item


def grad_frames(model: nn.Module, tokens: torch.Tensor, label: str, spec: BlockSpec | None) -> list[pd.DataFrame]:
    """The backward metrics of one model on the batch (its own loss), plus the gradient theory where it is exact."""
    p = measure(model, tokens, grad=True, activations=spec is not None, metrics=("norm_sq",))
    m = p.metrics
    m = m[m.metric.str.startswith("grad_")].assign(block=label, source="measured")
    frames = [m.groupby(["block", "layer", "metric", "source"], as_index=False)["value"].mean()[["block", "layer", "metric", "value", "source"]]]
    if spec is not None:
        try:
            th = propagate_grad(spec, model.config, p.activations[0], p.gradients[max(p.gradients)])
        except SigpropError:  # not exact for this spec (W^Q != 0): measured only
            return frames
        frames.append(th.metrics().assign(block=label, source="theory"))
    return frames


def analyze_models(module: nn.Module | None, source: str | None, revisions: list[str], *, seq_len: int, batch: int,
                    seed: int, data: str, vocab_size: int, dtype: str, kernels: bool, grad: bool, max_bytes: int | None,
                    progress: bool, outliers: bool = False, attention: bool = False, inputs: torch.Tensor | None = None) -> Analysis:
    """`analyze` of models sigprop did not build: one entry per module or checkpoint, on one batch each."""
    check_choice("dtype", dtype, DTYPES)
    for name, v in (("batch", batch), ("seq_len", seq_len)):
        check_positive(name, v)
    revs: list[str | None] = [r.strip() for rev in revisions for r in rev.split(",") if r.strip()] or [None]
    frames, kern, named, descs = [], {}, {}, set()
    first = None
    for rev in track(revs, description=f"probing {len(revs)} checkpoint(s)", disable=not progress or len(revs) < 2, transient=True):
        if module is not None:
            loaded = Loaded(type(module).__name__, module.to(DTYPES[dtype]))
        else:
            loaded = load_pretrained(source, rev, DTYPES[dtype])
        first = first or loaded
        probe_points(loaded.model)  # a model without a block stack: that one-line error before any input is made
        tokens, desc = model_tokens(loaded, data, batch, seq_len, vocab_size, seed, max_bytes, inputs)
        if tokens.is_floating_point():  # images etc. in the dtype the model was cast to
            tokens = tokens.to(DTYPES[dtype])
        descs.add(desc)
        try:
            m, k = probe_loaded(loaded, tokens, kernels, outliers, attention)
        except (ValueError, RuntimeError, IndexError, TypeError) as e:
            if inputs is not None or isinstance(e, SigpropError):
                raise
            raise SigpropError(f"{type(loaded.model).__name__} fails on token ids {tuple(tokens.shape)} ({str(e).splitlines()[0]}); "
                               "pass inputs=<a batch the model accepts>") from e
        frames.append(m)
        if grad:
            frames += grad_frames(loaded.model, tokens, loaded.label, None)
        if kernels:
            kern[loaded.label] = k
        named[loaded.label] = None
    label = first.label.split("@")[0] if source is not None else type(module).__name__
    settings = dict(model=label, revisions=[r for r in revs if r], depth=probe_points(first.model).depth,
                    width=width_of(first.model) or "?", heads=getattr(getattr(first.model, "config", None), "num_attention_heads", "?"),
                    seq_len=seq_len if inputs is None else (inputs.shape[1] if inputs.ndim == 2 else "?"),
                    batch=batch if inputs is None else inputs.shape[0], seed=seed, data=data if inputs is None else "inputs",
                    data_desc="; ".join(sorted(descs)), dtype=dtype, grad=grad,
                    outliers=outliers, attention=attention)
    a = Analysis(metrics=pd.concat(frames, ignore_index=True), kernels=kern, theory={}, specs=named, settings=settings)
    a.verdicts = {b: verdict(a.measured(b)) for b in named}
    return a


def run_checkpoints(run: str | Path, all_checkpoints: bool = False) -> list[tuple[int, Path]]:
    """[(step, file or folder)] of a run: its final checkpoint (checkpoints/last.pt, else its last kept snapshot), or
    with all_checkpoints every kept snapshot plus last.pt where it holds a step none of them has."""
    rd = RunDir(run)
    if not rd.has(CONFIG):
        raise SigpropError(f"{str(rd.path)!r} is not a training run (no {CONFIG}); accepted: a folder written by sigprop train")
    kept = rd.kept()
    final = [(int(load_checkpoint(rd.checkpoint)["step"]), rd.checkpoint)] if rd.checkpoint.exists() else []
    if not final and not kept:
        raise SigpropError(f"run {str(rd.path)!r} has no checkpoint yet; accepted: a run that took at least one checkpoint")
    if not all_checkpoints:
        return final or [list(kept.items())[-1]]
    if not kept:
        raise SigpropError(f"run {str(rd.path)!r} kept no snapshots; train it with --keep-checkpoints N, or drop --all-checkpoints")
    points = dict(kept)
    for step, path in final:
        points.setdefault(step, path)
    return sorted(points.items())


def probe_rows(p: Probe, per_head: bool) -> pd.DataFrame:
    """A finished probe's tidy rows: per layer with per-head metrics averaged (`Probe.per_layer`) when any were
    recorded (outliers' sink shares, attention entropy), else its layer-level rows alone."""
    return p.per_layer if per_head else p.metrics[p.metrics["head"] == -1]


def analyze_run(path: Path, all_checkpoints: bool, *, batch: int, dtype: str, kernels: bool, grad: bool, cache_dir,
                 progress: bool, outliers: bool, attention: bool = False) -> Analysis:
    """`analyze` of a run's checkpoints: one entry per checkpoint (label run@stepN), each model rebuilt from the run's
    config.json (build_model) with its weights loaded, all probed on the run's own data: the probe rows of its
    training (same corpus, vocabulary, length and seed; the same rows as its probes when batch = its probe_batch)."""
    check_choice("dtype", dtype, DTYPES)
    check_positive("batch", batch)
    points = run_checkpoints(path, all_checkpoints)
    rd = RunDir(path)
    stored = rd.read_json(CONFIG)
    spec, cfg = stored_run(stored)
    try:
        mcfg = ModelConfig(**stored["model"])
    except (KeyError, TypeError) as e:
        raise SigpropError(f"the run's {CONFIG} has no usable model record ({e}); accepted: a folder written by sigprop train") from None
    data = load_data(cfg.source, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, cache_dir=cache_dir, progress=progress, max_bytes=cfg.max_bytes)
    tokens = data.probe_batch(batch, seed=cfg.seed)[:, :-1]
    frames, kern, named = [], {}, {}
    for step, src in steps(points, f"probing {len(points)} checkpoint(s) of {rd.name}", progress and len(points) > 1,
                           name=lambda p: f"step {p[0]}"):
        model = build_model(spec, mcfg)
        if src.is_dir():
            load_kept(src, model)
        else:
            model.load_state_dict(load_checkpoint(src)["model"])
        model = model.to(DTYPES[dtype]).eval()
        label = f"{rd.name}@step{step}"
        p = measure(model, tokens, kernels=kernels, outliers=outliers, attention=attention)
        m = probe_rows(p, outliers or attention).assign(block=label, source="measured")
        frames.append(m[["block", "layer", "metric", "value", "source"]])
        if kernels:
            kern[label] = {layer: cosine_kernel(torch.from_numpy(k)).mean(0).numpy() for layer, k in p.kernels.items()}
        if grad:
            frames += grad_frames(model, tokens, label, None)
        named[label] = spec
    settings = dict(model=f"run {rd.name} ({spec.name})", run=str(rd.path), revisions=list(named), steps=[s for s, _ in points],
                    depth=mcfg.depth, width=mcfg.width, heads=mcfg.heads, seq_len=tokens.shape[1], batch=batch, seed=cfg.seed,
                    data=cfg.source, data_desc=f"the run's data ({cfg.source}, vocab {data.vocab_size})", vocab_size=data.vocab_size,
                    dtype=dtype, kind=mcfg.kind, grad=grad, outliers=outliers, attention=attention)
    a = Analysis(metrics=pd.concat(frames, ignore_index=True), kernels=kern, theory={}, specs=named, settings=settings)
    a.verdicts = {b: verdict(a.measured(b)) for b in named}
    return a
