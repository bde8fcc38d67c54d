"""`analyze`: signal propagation at initialisation for any set of blocks, measured and predicted.

    a = sp.analyze(["pre-ln", "skipless", "sas"], depth=18, width=768)
    a.metrics      # tidy DataFrame: block, layer, metric, value, source (measured | theory)
    a.table("sas") # one row per layer: cos_mean, eff_rank, rank1_residual, norm_sq, theory_cos_mean
    a.verdicts     # {"skipless": "rank collapse: cos_mean reaches 0.95 by layer 3", ...}
    a.plot()       # cos_mean and eff_rank vs depth (measured solid, theory dashed)

    sp.analyze(model)                                  # any nn.Module (its block stack is found)
    sp.analyze(model="DIR_OR_HUB_ID", revisions=[...])  # pretrained checkpoints (sigprop.studies.pretrained)
    sp.analyze(run="runs/sas", all_checkpoints=True)    # a training run's kept checkpoints, on the run's own data
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from sigprop.blocks import BlockSpec, ModelConfig, PRESETS, Transformer, get_spec
from sigprop.data import load_data
from sigprop.errors import SigpropError, check_choice, check_positive
from sigprop.perf.memory import check_fits
from sigprop.probes import cosine_kernel, measure
from sigprop.probes.metrics import COLLAPSE_COS, batch_corr_of_kernel
from sigprop.studies.foreign import DTYPES, analyze_models, analyze_run, grad_frames, probe_rows, steps
from sigprop.studies.result import Analysis, verdict
from sigprop.studies.theory import propagate, propagate_batch

DATA_SOURCES = ("code", "random", "repeat")
__all__ = ["COLLAPSE_COS", "DATA_SOURCES", "DTYPES", "Analysis", "analyze", "input_tokens", "resolve_blocks", "verdict"]


def resolve_blocks(blocks: str | BlockSpec | list[str | BlockSpec] | tuple) -> list[BlockSpec]:
    """'sas' | 'pre-ln,sas' | 'all' | [names or specs] -> specs."""
    if isinstance(blocks, (str, BlockSpec)):
        blocks = [blocks]
    specs: list[BlockSpec] = []
    for b in blocks:
        if isinstance(b, BlockSpec):
            specs.append(b)
            continue
        for name in (n.strip() for n in b.split(",") if n.strip()):
            specs.extend(PRESETS.values() if name == "all" else [get_spec(name)])
    if not specs:
        raise SigpropError("no block given; accepted: all, " + ", ".join(PRESETS))
    return specs


def input_tokens(
    data: str, batch: int, seq_len: int, vocab_size: int, seed: int, cache_dir: str | None = None, progress: bool = True, max_bytes: int | None = None
):
    """(tokens (B, T), vocab size, description) for the probe batch."""
    check_choice("data", data, DATA_SOURCES)
    g = torch.Generator().manual_seed(seed)
    if data == "code":
        d = load_data(source="code", vocab_size=vocab_size, seq_len=seq_len, cache_dir=cache_dir, progress=progress, max_bytes=max_bytes)
        return d.probe_batch(batch, seed=seed)[:, :seq_len], d.vocab_size, "code (stdlib validation split)"
    if data == "random":
        return torch.randint(0, vocab_size, (batch, seq_len), generator=g), vocab_size, "uniform random tokens"
    tok = torch.randint(0, vocab_size, (batch, 1), generator=g)
    return tok.expand(batch, seq_len).contiguous(), vocab_size, "one token repeated"


def analyze(
    blocks: str | BlockSpec | list[str | BlockSpec] | nn.Module = "sas",
    *,
    model: str | None = None,
    revisions: list[str] | tuple[str, ...] = (),
    depth: int = 18,
    width: int = 768,
    heads: int = 12,
    seq_len: int = 128,
    batch: int = 8,
    seed: int = 0,
    data: str = "code",
    vocab_size: int = 8192,
    sets: list[str] | tuple[str, ...] = (),
    theory: bool = True,
    dtype: str = "float32",
    kind: str = "decoder",
    kernels: bool = True,
    grad: bool = False,
    cache_dir: str | None = None,
    max_bytes: int | None = None,
    progress: bool = True,
    outliers: bool = False,
    attention: bool = False,
    run: str | Path | None = None,
    all_checkpoints: bool = False,
    inputs: torch.Tensor | None = None,
) -> Analysis:
    """Probe every block at initialisation on the same batch; add the infinite-width prediction.

    outliers=True adds the outlier-feature statistics of the paper's sequel per layer (`outlier_stats`), the
    attention-sink share and, for sigprop's blocks, theory's batch correlation (`theory.propagate_batch`).
    attention=True adds the softmax attention's entropy per layer as a fraction of its maximum (heads averaged, and
    the most uniform head): 1 = uniform (W^Q = 0 at init gives exactly 1), near 0 = each query on one key.
    inputs: a ready batch, used as is instead of `data`: for a model that takes no token ids (an image model:
    (B, 3, H, W)), or token ids (B, T) (then batch and seq_len are its shape). Without it a model's vocabulary is read
    from config.vocab_size, cfg.d_vocab (TransformerLens) or its input nn.Embedding.

    `blocks` may also be an nn.Module, and `model` a folder written by `save_pretrained` or a hub id
    (with `revisions`, one analysis per checkpoint); those are probed as they are, without theory.
    `run`: a folder written by `sigprop train`: its final checkpoint (all_checkpoints: every snapshot kept with
    --keep-checkpoints, and the final one), rebuilt from the run's config.json and probed on the run's own data.
    """
    if run is not None:
        if model is not None or isinstance(blocks, nn.Module) or revisions:
            raise SigpropError("run= probes a training run's checkpoints; accepted: run= alone, or model=/revisions= without it")
        return analyze_run(Path(run), all_checkpoints, batch=batch, dtype=dtype, kernels=kernels, grad=grad,
                            cache_dir=cache_dir, progress=progress, outliers=outliers, attention=attention)
    if all_checkpoints:
        raise SigpropError("all_checkpoints (--all-checkpoints) needs run= (--run RUNDIR)")
    if isinstance(blocks, nn.Module) or model is not None:
        for name, v in (("batch", batch), ("seq_len", seq_len), ("vocab_size", vocab_size)):
            check_positive(name, v)
        return analyze_models(blocks if isinstance(blocks, nn.Module) else None, model, list(revisions), seq_len=seq_len,
                               batch=batch, seed=seed, data=data, vocab_size=vocab_size, dtype=dtype, kernels=kernels,
                               grad=grad, max_bytes=max_bytes, progress=progress, outliers=outliers, attention=attention, inputs=inputs)
    if revisions:
        raise SigpropError("revisions= needs model= (a folder or hub id of a pretrained model)")
    specs = [s.with_sets(sets) for s in resolve_blocks(blocks)]
    check_choice("dtype", dtype, DTYPES)
    for name, v in (("batch", batch), ("seq_len", seq_len), ("vocab_size", vocab_size), ("depth", depth), ("width", width), ("heads", heads)):
        check_positive(name, v)
    if inputs is not None:  # token ids given: sigprop's own blocks take them as the batch
        if inputs.ndim != 2 or inputs.is_floating_point() or inputs.numel() == 0 or int(inputs.min()) < 0 or int(inputs.max()) >= vocab_size:
            raise SigpropError(f"inputs= for sigprop's blocks must be token ids (B, T) in [0, vocab_size={vocab_size}), got "
                               f"{inputs.dtype} {tuple(inputs.shape)}")
        batch, seq_len = inputs.shape
    check_fits(depth, width, heads, seq_len, batch, vocab_size, blocks=len(specs), theory=theory, grad=grad)
    if inputs is not None:
        tokens, vocab, data_desc = inputs.long(), vocab_size, f"the inputs given, {tuple(inputs.shape)}"
    else:
        tokens, vocab, data_desc = input_tokens(data, batch, seq_len, vocab_size, seed, cache_dir, progress, max_bytes)
    cfg = ModelConfig(depth=depth, width=width, heads=heads, vocab_size=vocab, context=seq_len, kind=kind)
    frames, kern, theo, named = [], {}, {}, {}
    for spec in steps(specs, f"probing {len(specs)} block(s) at init", progress, name=lambda s: s.name):
        label = spec.name if spec.name not in named else f"{spec.name}#{len(named)}"
        torch.manual_seed(seed)
        model = Transformer(spec, cfg).to(DTYPES[dtype])
        p = measure(model, tokens, kernels=True, outliers=outliers, attention=attention)
        m = probe_rows(p, outliers or attention).assign(block=label, source="measured")
        frames.append(m[["block", "layer", "metric", "value", "source"]])
        K = p.kernels
        if kernels:
            kern[label] = {layer: cosine_kernel(torch.from_numpy(k)).mean(0).numpy() for layer, k in K.items()}
        if theory:
            th = propagate(spec, cfg, torch.from_numpy(K[0]), seed=seed)
            theo[label] = th
            frames.append(th.metrics().assign(block=label, source="theory"))
            if outliers:
                frames.append(batch_corr_theory(model, spec, cfg, tokens, seed).assign(block=label, source="theory"))
        if grad:
            frames += grad_frames(model, tokens, label, spec if theory else None)
        named[label] = spec
    metrics = pd.concat(frames, ignore_index=True)
    settings = dict(depth=depth, width=width, heads=heads, seq_len=seq_len, batch=batch, seed=seed,
                    data=data if inputs is None else "inputs", data_desc=data_desc, vocab_size=vocab, dtype=dtype, kind=kind, sets=list(sets), grad=grad, outliers=outliers, attention=attention)
    a = Analysis(metrics=metrics, kernels=kern, theory=theo, specs=named, settings=settings)
    a.verdicts = {b: verdict(a.measured(b)) for b in named}
    return a


def batch_corr_theory(model: Transformer, spec: BlockSpec, cfg: ModelConfig, tokens: torch.Tensor, seed: int) -> pd.DataFrame:
    """Theory's batch_corr_mean / batch_corr_rms per layer from the joint kernel of the batch's embeddings."""
    with torch.no_grad():
        x0 = model.embed(tokens).double()
    th = propagate_batch(spec, cfg, x0, seed=seed)
    rows = []
    for layer, K in enumerate(th.kernels):
        mean, rms = batch_corr_of_kernel(K)
        rows += [{"layer": layer, "metric": "batch_corr_mean", "value": float(mean.mean())},
                 {"layer": layer, "metric": "batch_corr_rms", "value": float(rms.mean())}]
    return pd.DataFrame(rows)
