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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import track
from torch import nn

from sigprop.blocks import BlockSpec, ModelConfig, PRESETS, Transformer, build_model, get_spec
from sigprop.data import load_data
from sigprop.errors import SigpropError, check_choice, check_positive
from sigprop.probes import cosine_kernel, measure, probe_points
from sigprop.probes.metrics import COLLAPSE_COS, batch_corr_of_kernel, layer_exponent
from sigprop.runs import CONFIG, RunDir
from sigprop.studies.pretrained import Loaded, load_pretrained, model_tokens, probe_loaded, width_of
from sigprop.studies.theory import TheoryResult, propagate, propagate_batch, propagate_grad
from sigprop.training.checkpoint import load_checkpoint, load_kept
from sigprop.training.resolve import stored_run

DATA_SOURCES = ("code", "random", "repeat")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
TABLE_METRICS = ("cos_mean", "eff_rank", "rank1_residual", "norm_sq")
OUTLIER_TABLE_METRICS = ("of_kurtosis", "max_median_ratio", "feat_corr_rms", "batch_corr_mean", "batch_corr_rms", "x_rms",
                         "massive_ratio", "sink_share", "sink_share_max")
GRAD_TABLE_METRICS = ("grad_norm", "grad_cos_mean", "grad_W_Q", "grad_W_K", "grad_W_V", "grad_mlp")
#: A layer whose mean token cosine reaches this has collapsed (tokens nearly parallel).


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


def steps(items: list, description: str, enabled: bool, name=str):
    """Iterate with progress on stderr: a rich bar on a terminal; one line per item ('3/8 sas-p, 41 s') when
    stderr is a pipe or a file, where a live bar would show nothing."""
    import sys
    import time

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


def verdict(cos: np.ndarray) -> str:
    """One line on rank collapse from the per-layer cos_mean (index 0 = embedding)."""
    hit = np.nonzero(cos >= COLLAPSE_COS)[0]
    if len(hit) and cos[0] < COLLAPSE_COS:
        return f"rank collapse: cos_mean reaches {cos[hit[0]]:.2f} by layer {hit[0]} (embedding {cos[0]:.2f}, last {cos[-1]:.2f})"
    rise = cos.max() - cos[0]
    if rise > 0.2:
        top = int(cos.argmax())
        return f"tokens align: cos_mean climbs from {cos[0]:.2f} to {cos[top]:.2f} (layer {top}), no full collapse"
    dev = np.abs(cos - cos[0]).max()
    return f"no rank collapse: cos_mean stays within {dev:.2f} of the embedding's {cos[0]:.2f}"


@dataclass(repr=False)
class Analysis:
    """The result of `analyze`: tidy metrics, kernels, theory and one verdict per block."""

    metrics: pd.DataFrame
    kernels: dict[str, dict[int, np.ndarray]]  # block -> layer -> mean cosine kernel (T, T)
    theory: dict[str, TheoryResult]
    specs: dict[str, BlockSpec | None]  # None: a model sigprop did not build
    settings: dict
    verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def blocks(self) -> list[str]:
        return list(self.specs)

    def measured(self, block: str, metric: str = "cos_mean") -> np.ndarray:
        df = self.metrics
        df = df[(df.block == block) & (df.metric == metric) & (df.source == "measured")]
        return df.sort_values("layer")["value"].to_numpy()

    def table(self, block: str) -> pd.DataFrame:
        """One row per layer with the main metrics and the theory's cos_mean."""
        df = self.metrics[self.metrics.block == block]
        wide = df[df.source == "measured"].pivot_table(index="layer", columns="metric", values="value")
        cols = [m for m in TABLE_METRICS if m in wide]
        wide = wide[cols]
        th = df[(df.source == "theory") & (df.metric == "cos_mean")].set_index("layer")["value"]
        if len(th):
            wide["theory_cos_mean"] = th
        return wide.reset_index()

    def grad_table(self, block: str) -> pd.DataFrame:
        """One row per layer with the backward metrics (analyze(..., grad=True)) and the theory's grad_norm."""
        df = self.metrics[(self.metrics.block == block) & self.metrics.metric.str.startswith("grad_")]
        if df.empty:
            raise SigpropError(f"no gradient metrics for {block!r}; run analyze(..., grad=True) (CLI: --grad)")
        wide = df[df.source == "measured"].pivot_table(index="layer", columns="metric", values="value")
        wide = wide[[m for m in GRAD_TABLE_METRICS if m in wide]]
        th = df[(df.source == "theory") & (df.metric == "grad_norm")].set_index("layer")["value"]
        if len(th):
            wide["theory_grad_norm"] = th
        return wide.reset_index()

    def outlier_table(self, block: str) -> pd.DataFrame:
        """One row per layer with the outlier-feature statistics (analyze(..., outliers=True)) and theory's batch_corr_mean."""
        df = self.metrics[self.metrics.block == block]
        wide = df[df.source == "measured"].pivot_table(index="layer", columns="metric", values="value")
        cols = [m for m in OUTLIER_TABLE_METRICS if m in wide]
        if "of_kurtosis" not in cols:
            raise SigpropError(f"no outlier statistics for {block!r}; run analyze(..., outliers=True) (CLI: --outliers)")
        wide = wide[cols]
        th = df[(df.source == "theory") & (df.metric == "batch_corr_mean")].set_index("layer")["value"]
        if len(th):
            wide["theory_batch_corr_mean"] = th
        return wide.reset_index()

    def plot_outliers(self, out: str | Path | None = None):
        """Depth curves of the outlier statistics (theory's batch correlation dashed)."""
        from sigprop.plots.signal import depth_curves

        fig = depth_curves(self.metrics, metrics=("of_kurtosis", "max_median_ratio", "batch_corr_mean", "sink_share"),
                           note=self.scale_text())
        if out is not None:
            from sigprop.plots import savefig

            savefig(fig, Path(out) / "outliers")
        return fig

    def summary(self) -> pd.DataFrame:
        """One row per block: embedding and last-layer cos_mean / eff_rank, theory error, the angle exponent (and with
        grad=True the gradient exponent: `layer_exponent`, Cowsik et al. 2024), verdict."""
        rows = []
        for b in self.blocks:
            t = self.table(b)
            row = {
                "block": b,
                "cos_mean[0]": t.cos_mean.iloc[0],
                "cos_mean[L]": t.cos_mean.iloc[-1],
                "eff_rank[0]": t.eff_rank.iloc[0],
                "eff_rank[L]": t.eff_rank.iloc[-1],
            }
            if "theory_cos_mean" in t:
                row["max |theory - measured| cos"] = float((t.theory_cos_mean - t.cos_mean).abs().max())
            row["angle_exponent"] = layer_exponent(1 - t.cos_mean.to_numpy())
            g = self.metrics[(self.metrics.block == b) & (self.metrics.metric == "grad_norm") & (self.metrics.source == "measured")]
            if len(g):
                row["gradient_exponent"] = layer_exponent(g.sort_values("layer").value.to_numpy()[::-1])
            row["verdict"] = self.verdicts[b]
            rows.append(row)
        return pd.DataFrame(rows)

    def scale_text(self) -> str:
        s = self.settings
        if s.get("model"):
            return (f"{s['model']} · L={s['depth']}, d={s['width']}, T={s['seq_len']}, batch {s['batch']}, "
                    f"{s['data_desc']}, {s['dtype']}, seed {s['seed']}")
        return (
            f"at init · L={s['depth']}, d={s['width']}, H={s['heads']}, T={s['seq_len']}, batch {s['batch']}, "
            f"{s['data_desc']}, {s['dtype']}, seed {s['seed']}"
        )

    def plot(self, out: str | Path | None = None, metrics: tuple[str, ...] = ("cos_mean", "eff_rank")):
        """Depth curves (measured solid, theory dashed). Returns the figure; with `out`, also saves it."""
        from sigprop.plots.signal import depth_curves

        fig = depth_curves(self.metrics, metrics=metrics, note=self.scale_text())
        if out is not None:
            from sigprop.plots import savefig

            savefig(fig, Path(out) / "rank_collapse")
        return fig

    def plot_kernels(self, out: str | Path | None = None):
        """Cosine-kernel heatmaps at the first, middle and last layer of each block."""
        from sigprop.plots.signal import kernel_grid

        fig = kernel_grid(self.kernels, note=self.scale_text())
        if out is not None:
            from sigprop.plots import savefig

            savefig(fig, Path(out) / "kernels")
        return fig

    def plot_grad(self, out: str | Path | None = None):
        """Depth profiles of the backward signal: ||dL/dX_l|| (theory dashed) and ||dW^Q||, ||dW^K|| against ||dW^V||."""
        from sigprop.plots.grad import grad_profile

        fig = grad_profile(self.metrics, note=self.scale_text())
        if out is not None:
            from sigprop.plots import savefig

            savefig(fig, Path(out) / "gradients")
        return fig

    def plot_revisions(self, out: str | Path | None = None, metric: str = "cos_mean"):
        """One figure of a metric per layer x checkpoint: rank collapse through the pre-training of a model."""
        from sigprop.plots.checkpoints import layer_by_checkpoint

        fig = layer_by_checkpoint(self.metrics, self.blocks, metric=metric, note=self.scale_text())
        if out is not None:
            from sigprop.plots import savefig

            savefig(fig, Path(out) / "revisions")
        return fig

    def save(self, out: str | Path) -> list[Path]:
        """Write metrics.csv, summary.json and the figures into `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.metrics.to_csv(out / "metrics.csv", index=False)
        summary = {"settings": self.settings, "verdicts": self.verdicts, "theory_notes": {b: t.notes for b, t in self.theory.items()}}
        tmp = out / "analysis.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(out / "analysis.json")
        from sigprop.plots import savefig

        paths = [out / "metrics.csv", out / "analysis.json"]
        paths += savefig(self.plot(), out / "rank_collapse")
        if self.metrics.metric.str.startswith("grad_").any():
            paths += savefig(self.plot_grad(), out / "gradients")
        if (self.metrics.metric == "of_kurtosis").any():
            paths += savefig(self.plot_outliers(), out / "outliers")
        if len(self.specs) > 1 and self.settings.get("revisions"):
            paths += savefig(self.plot_revisions(), out / "revisions")
        if self.kernels:
            paths += savefig(self.plot_kernels(), out / "kernels")
        return paths

    def __repr__(self) -> str:  # short: the kernels would flood a notebook
        return f"Analysis({', '.join(self.blocks)}; {self.scale_text()})\n" + self.summary().to_string(index=False)

    def _repr_html_(self) -> str:  # Jupyter
        return f"<p><i>{self.scale_text()}</i></p>" + self.summary().to_html(index=False, float_format="%.3f")


def probe_bytes(depth: int, width: int, heads: int, seq_len: int, batch: int, vocab_size: int, *, blocks: int = 1,
                theory: bool = True, grad: bool = False) -> int:
    """A rough peak of one analyze pass in bytes, dominated by the float64 T x T kernels: B per layer measured, with
    their cosine and eigenvalue work (~3x), as many again for theory, two blocks' at once when probing several
    (measured: within ~20% at T = 512-2048); plus one layer's float32 attention scores (every layer's with grad),
    activations and weights."""
    L, d, H, T, B = depth, width, heads, seq_len, batch
    kernels = 8 * B * T * T * (L + 1) * (6 if theory else 3) * (2 if blocks > 1 else 1)
    scores = 4 * B * H * T * T * (L if grad else 1)
    acts = 4 * B * T * d * (L + 1) * (8 if grad else 2)
    weights = 4 * (12 * L * d * d + 2 * vocab_size * d) * (2 if grad else 1)
    return kernels + scores + acts + weights


def available_bytes() -> int | None:
    """Memory this process can still take (Linux MemAvailable, else free pages), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_fits(depth: int, width: int, heads: int, seq_len: int, batch: int, vocab_size: int, **kw) -> None:
    """Refuse, in one line, a probe batch whose analyze pass cannot fit in the memory left (T x T kernels grow as T^2);
    `kw`: probe_bytes' blocks, theory, grad."""
    need, free = probe_bytes(depth, width, heads, seq_len, batch, vocab_size, **kw), available_bytes()
    if free is None or need <= free:
        return
    lo, hi = 0, seq_len  # the longest sequence that fits (the estimate grows with T)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if probe_bytes(depth, width, heads, mid, batch, vocab_size, **kw) <= free else (lo, mid - 1)
    raise SigpropError(f"seq_len {seq_len} with batch {batch}, depth {depth}, width {width}, {heads} heads needs about "
                       f"{need / 2**30:,.1f} GiB to probe (its T x T kernels per layer) and {free / 2**30:,.1f} GiB are free; "
                       f"accepted: seq_len up to about {lo} at this batch, or a smaller batch or depth")


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
    run: str | Path | None = None,
    all_checkpoints: bool = False,
    inputs: torch.Tensor | None = None,
) -> Analysis:
    """Probe every block at initialisation on the same batch; add the infinite-width prediction.

    outliers=True adds the outlier-feature statistics of the paper's sequel per layer (`outlier_stats`), the
    attention-sink share and, for sigprop's blocks, theory's batch correlation (`theory.propagate_batch`).
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
        return _analyze_run(Path(run), all_checkpoints, batch=batch, dtype=dtype, kernels=kernels, grad=grad,
                            cache_dir=cache_dir, progress=progress, outliers=outliers)
    if all_checkpoints:
        raise SigpropError("all_checkpoints (--all-checkpoints) needs run= (--run RUNDIR)")
    if isinstance(blocks, nn.Module) or model is not None:
        for name, v in (("batch", batch), ("seq_len", seq_len), ("vocab_size", vocab_size)):
            check_positive(name, v)
        return _analyze_models(blocks if isinstance(blocks, nn.Module) else None, model, list(revisions), seq_len=seq_len,
                               batch=batch, seed=seed, data=data, vocab_size=vocab_size, dtype=dtype, kernels=kernels,
                               grad=grad, max_bytes=max_bytes, progress=progress, outliers=outliers, inputs=inputs)
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
        p = measure(model, tokens, kernels=True, outliers=outliers)
        m = (p.per_layer if outliers else p.metrics[p.metrics["head"] == -1]).assign(block=label, source="measured")
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
                    data=data if inputs is None else "inputs", data_desc=data_desc, vocab_size=vocab, dtype=dtype, kind=kind, sets=list(sets), grad=grad, outliers=outliers)
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


def _analyze_models(module: nn.Module | None, source: str | None, revisions: list[str], *, seq_len: int, batch: int,
                    seed: int, data: str, vocab_size: int, dtype: str, kernels: bool, grad: bool, max_bytes: int | None,
                    progress: bool, outliers: bool = False, inputs: torch.Tensor | None = None) -> Analysis:
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
            m, k = probe_loaded(loaded, tokens, kernels, outliers)
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
                    outliers=outliers)
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


def _analyze_run(path: Path, all_checkpoints: bool, *, batch: int, dtype: str, kernels: bool, grad: bool, cache_dir,
                 progress: bool, outliers: bool) -> Analysis:
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
        p = measure(model, tokens, kernels=kernels, outliers=outliers)
        m = (p.per_layer if outliers else p.metrics[p.metrics["head"] == -1]).assign(block=label, source="measured")
        frames.append(m[["block", "layer", "metric", "value", "source"]])
        if kernels:
            kern[label] = {layer: cosine_kernel(torch.from_numpy(k)).mean(0).numpy() for layer, k in p.kernels.items()}
        if grad:
            frames += grad_frames(model, tokens, label, None)
        named[label] = spec
    settings = dict(model=f"run {rd.name} ({spec.name})", run=str(rd.path), revisions=list(named), steps=[s for s, _ in points],
                    depth=mcfg.depth, width=mcfg.width, heads=mcfg.heads, seq_len=tokens.shape[1], batch=batch, seed=cfg.seed,
                    data=cfg.source, data_desc=f"the run's data ({cfg.source}, vocab {data.vocab_size})", vocab_size=data.vocab_size,
                    dtype=dtype, kind=mcfg.kind, grad=grad, outliers=outliers)
    a = Analysis(metrics=pd.concat(frames, ignore_index=True), kernels=kern, theory={}, specs=named, settings=settings)
    a.verdicts = {b: verdict(a.measured(b)) for b in named}
    return a
