"""Phase diagrams at init: final-layer cos_mean and eff_rank (rank collapse) or the attention-entropy ratio (entropy
collapse) over a 2-D grid of knobs.

    p = sp.phase("sas-depth-beta_ff", width=256)   # theory over the grid, a few points measured
    p.grid       # tidy: x, y, metric, value (theory)
    p.points     # the measured points: x, y, metric, measured, theory, gap
    p.plot(out)  # heatmap per metric, measured points as circles in the same colours, the paper's setting starred

The grid comes from `sigprop.studies.theory.propagate` (seconds: no network is built), on the input kernel of one
probe batch embedded as the model would embed it. Depth diagrams use one propagation to the largest depth
per column: with beta_ff given explicitly, the kernel after l blocks of a deeper stack is that of depth l.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sigprop.studies.analysis import COLLAPSE_COS, input_tokens
from sigprop.blocks import BlockSpec, ModelConfig, Transformer, get_spec
from sigprop.blocks.spec import BETA_FF_REF, BETA_FF_REF_DEPTH
from sigprop.errors import SigpropError, choice_error
from sigprop.probes import KERNEL_METRICS, measure
from sigprop.studies.theory import propagate

METRICS = ("cos_mean", "eff_rank")
#: Agreement asked of a measured point with the theory's colour: |cos_mean gap| and relative eff_rank gap.
TOLERANCE = {"cos_mean": 0.05, "eff_rank": 0.15, "attn_entropy_ratio": 0.05}
#: Metrics whose tolerance is absolute (the others: relative to the theory's value).
ABSOLUTE = ("cos_mean", "attn_entropy_ratio")


@dataclass(frozen=True)
class Diagram:
    """A 2-D slice through the knobs of one block: x and y are knob names, 'depth', or (x only) 'seq_len', the context
    length T: theory then reads the top-left T x T block of the input kernel (position t's embedding does not depend on
    the length) and the measured points the first T tokens."""

    name: str
    block: str
    x: str
    y: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    paper: tuple[float, float]  # where the paper's setting sits
    paper_label: str
    depth: int = 18  # when neither axis is depth
    sets: tuple[str, ...] = ()
    log_x: bool = False
    title: str = ""
    #: final-layer metrics drawn: kernel metrics, and attn_entropy_ratio (entropy collapse: attention on one key)
    metrics: tuple[str, ...] = METRICS

    def spec(self, x: float, y: float | None = None) -> BlockSpec:
        knobs = {self.x: x} if self.x not in ("depth", "seq_len") else {}
        if y is not None and self.y != "depth":
            knobs[self.y] = y
        return get_spec(self.block, self.sets).replace(**knobs)


_DEPTHS = (1, 2, 4, 6, 9, 12, 18, 24, 36, 48, 72)
_BETA_FF = tuple(float(v) for v in np.round(np.geomspace(0.02, 1.0, 12), 4))
_UNIT = tuple(float(v) for v in np.round(np.linspace(0.0, 1.0, 9), 3))  # 9 steps: a sampled-softmax point costs ~0.3 s CPU
_QK = tuple(float(v) for v in np.round(np.geomspace(0.005, 5.0, 8), 4))
_RESID = tuple(float(v) for v in np.round(np.geomspace(0.125, 4.0, 6), 4))
_CONTEXT = (4, 8, 16, 32, 64, 128, 256)
_SHAPED = tuple(float(v) for v in np.round(np.linspace(0.0, 1.5, 13), 3))

DIAGRAMS: dict[str, Diagram] = {
    d.name: d
    for d in [
        Diagram("sas-depth-beta_ff", "sas", "beta_ff", "depth", _BETA_FF, _DEPTHS, (BETA_FF_REF, BETA_FF_REF_DEPTH),
                r"paper: L=18, $\beta_{FF}$=0.1", log_x=True, title=r"SAS and SAS-P (identical at init): depth × MLP-branch gain $\beta_{FF}$"),
        # beta_sa starts at 0.125: at alpha_sa = beta_sa = 0 the block outputs exactly 0
        Diagram("pre-ln-alpha_sa-beta_sa", "pre-ln", "alpha_sa", "beta_sa", _UNIT, _UNIT[1:], (1.0, 1.0),
                r"Pre-LN ($\alpha_{SA}=\beta_{SA}=1$)", title=r"Pre-LN-style block with a downweighted skip: $\alpha_{SA}$ × $\beta_{SA}$ (L=18)"),
        # Giorlandino & Goldt (ICLR 2026, arXiv 2505.24333): rank collapse at small query/key scale and strong residual
        # branches, entropy collapse at large scale; an attention-only Pre-LN stack (beta_ff = 0 drops the MLP)
        Diagram("qk-scale-residual", "pre-ln", "query_init", "beta_sa", _QK, _RESID, (0.02, 1.0),
                r"standard init ($\sigma_Q$=0.02, $\beta_{SA}$=1)", sets=("beta_ff=0",), log_x=True,
                metrics=("cos_mean", "attn_entropy_ratio"),
                title=r"attention-only Pre-LN: query scale $\sigma_Q$ × attention-branch gain $\beta_{SA}$ (L=18): rank vs entropy collapse"),
        # rank collapse over context length and depth (attention-only naive skipless, beta_ff = 0): causal averaging
        # aligns token t with the tokens before it, so every context collapses with depth; a longer one holds on a
        # few blocks longer (more early-late pairs), the opposite of what a "more tokens averaged" intuition says
        Diagram("context-depth", "skipless", "seq_len", "depth", _CONTEXT, _DEPTHS, (128, 18),
                "paper: T=128, L=18", sets=("beta_ff=0",), log_x=True,
                title=r"attention-only naive skipless block: context length $T$ × depth $L$"),
        Diagram("shaped-alpha-gamma", "sas", "alpha", "gamma", _SHAPED, _SHAPED, (1.0, 1.0),
                r"paper: $\alpha=\beta=\gamma=1$ ($A=I$)", title=r"SAS, shaped attention $\alpha I + \beta A - \gamma C$: $\alpha$ × $\gamma$ ($\beta$=1, L=18)"),
    ]
}


@dataclass(repr=False)
class Phase:
    """Theory over the grid plus the measured points of one diagram."""

    diagram: Diagram
    grid: pd.DataFrame  # x, y, metric, value
    points: pd.DataFrame  # x, y, metric, measured, theory, gap, ok
    settings: dict
    seconds: dict = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return bool(self.points["ok"].all()) if len(self.points) else True

    def scale_text(self) -> str:
        s = self.settings
        return (f"at init · heatmap: theory on the input kernel of one batch · circles: measured at d={s['width']}, "
                f"H={s['heads']}, T={'the x axis' if self.diagram.x == 'seq_len' else s['seq_len']}, batch {s['batch']}, data {s['data']}, seed {s['seed']}\n"
                f"tolerance |Δcos| ≤ {TOLERANCE['cos_mean']}, |Δeff_rank| / eff_rank ≤ {TOLERANCE['eff_rank']}, "
                f"|Δentropy ratio| ≤ {TOLERANCE['attn_entropy_ratio']}")

    def plot(self, out: str | Path | None = None):
        from sigprop.plots.phase import phase_figure

        fig = phase_figure(self)
        if out is not None:
            from sigprop.plots import savefig

            savefig(fig, Path(out) / self.diagram.name)
        return fig

    def __repr__(self) -> str:
        n = len(self.diagram.metrics)
        return f"Phase({self.diagram.name}: {len(self.grid) // n} grid points, {len(self.points) // n} measured, agrees={self.agrees})"


def input_kernel(spec: BlockSpec, cfg: ModelConfig, tokens: torch.Tensor, seed: int) -> torch.Tensor:
    """The embedding kernel (B, T, T) the model with this seed would feed its first block (built at depth 1:
    the embedding is drawn first, so it is the same as a deeper model's)."""
    torch.manual_seed(seed)
    model = Transformer(spec, cfg.replace(depth=1))
    return torch.from_numpy(measure(model, tokens, kernels=True).kernels[0])


def _theory_metrics(th, layer: int, metrics: Sequence[str]) -> dict[str, float]:
    """The theory's metrics after `layer` blocks: kernel metrics of its kernel, the entropy ratio of block `layer`."""
    K = th.kernels[layer]
    return {m: th.entropy[layer - 1] if m == "attn_entropy_ratio" else float(KERNEL_METRICS[m](K).mean()) for m in metrics}


def context(d: Diagram, x: float, full: torch.Tensor) -> torch.Tensor:
    """An input kernel (B, T, T) or tokens (B, T) cut to the grid point's context length on a 'seq_len' axis."""
    if d.x != "seq_len":
        return full
    T = int(x)
    return full[..., :T, :T] if full.is_floating_point() else full[:, :T]


def theory_grid(d: Diagram, cfg: ModelConfig, sigma0: torch.Tensor, samples: int = 4, seed: int = 0) -> pd.DataFrame:
    """Final-layer metrics predicted at every grid point."""
    rows = []
    if d.y == "depth":
        top = max(d.ys)
        for x in d.xs:
            th = propagate(d.spec(x), cfg.replace(depth=int(top)), context(d, x, sigma0), samples=samples, seed=seed)
            for y in d.ys:
                rows += [{"x": x, "y": y, "metric": m, "value": v} for m, v in _theory_metrics(th, int(y), d.metrics).items()]
    else:
        c = cfg.replace(depth=d.depth)
        for y in d.ys:
            for x in d.xs:
                th = propagate(d.spec(x, y), c, sigma0, samples=samples, seed=seed)
                rows += [{"x": x, "y": y, "metric": m, "value": v} for m, v in _theory_metrics(th, d.depth, d.metrics).items()]
    return pd.DataFrame(rows)


def default_points(d: Diagram, n: int = 2, max_depth: int = 18) -> list[tuple[float, float]]:
    """The paper's setting plus an n x n spread of grid points (quarter and three-quarter positions).

    On a depth axis only depths up to max_depth are measured (the deep columns cost the most to build)."""
    def pick(values: Sequence[float]) -> list[float]:
        idx = np.unique(np.round(np.linspace(0.25, 0.75, n) * (len(values) - 1)).astype(int))
        return [values[i] for i in idx]

    ys = [y for y in d.ys if y <= max_depth] if d.y == "depth" else d.ys
    pts = [d.paper] + [(x, y) for y in pick(ys) for x in pick(d.xs)]
    return list(dict.fromkeys(pts))


def phase(
    diagram: str = "sas-depth-beta_ff",
    *,
    width: int = 768,
    heads: int = 12,
    seq_len: int = 128,
    batch: int = 2,
    seed: int = 0,
    data: str = "code",
    vocab_size: int = 8192,
    measure_points: bool | Sequence[tuple[float, float]] = True,
    samples: int = 4,
    cache_dir: str | None = None,
    max_bytes: int | None = None,
    progress: bool = True,
) -> Phase:
    """Theory over the diagram's grid; with measure_points, `analyze` at the paper's setting and a few grid points."""
    if diagram not in DIAGRAMS:
        raise choice_error("phase diagram", diagram, DIAGRAMS)
    d = DIAGRAMS[diagram]
    if d.x == "seq_len":  # the diagram's own axis sets the context: the longest T on it
        seq_len = int(max(d.xs))
    tokens, vocab, desc = input_tokens(data, batch, seq_len, vocab_size, seed, cache_dir, progress, max_bytes)
    cfg = ModelConfig(depth=d.depth, width=width, heads=heads, vocab_size=vocab, context=seq_len)
    t0 = time.perf_counter()
    sigma0 = input_kernel(get_spec(d.block, d.sets), cfg, tokens, seed)
    grid = theory_grid(d, cfg, sigma0, samples, seed)
    seconds = {"theory": time.perf_counter() - t0}
    pts = default_points(d) if measure_points is True else list(measure_points or [])
    rows = []
    t0 = time.perf_counter()
    for x, y in pts:
        rows += _measure_point(d, x, y, cfg, tokens, seed, samples)
    seconds["measured"] = time.perf_counter() - t0
    settings = dict(width=width, heads=heads, seq_len=seq_len, batch=batch, seed=seed, data=data, data_desc=desc,
                    vocab_size=vocab)
    cols = ["x", "y", "metric", "measured", "theory", "gap", "ok"]
    return Phase(diagram=d, grid=grid, points=pd.DataFrame(rows, columns=cols), settings=settings, seconds=seconds)


def _measure_point(d: Diagram, x: float, y: float, cfg: ModelConfig, tokens: torch.Tensor, seed: int, samples: int) -> list[dict]:
    """Build the network at one grid point, probe it, and set its final layer beside the theory's value there."""
    depth = int(y) if d.y == "depth" else d.depth
    spec = d.spec(x, y)
    c = cfg.replace(depth=depth)
    torch.manual_seed(seed)
    model = Transformer(spec, c)
    entropy = "attn_entropy_ratio" in d.metrics
    p = measure(model, context(d, x, tokens), kernels=True, attention=entropy)
    K = {layer: torch.from_numpy(k) for layer, k in p.kernels.items()}
    meas = {m: float(KERNEL_METRICS[m](K[max(K)]).mean()) for m in d.metrics if m != "attn_entropy_ratio"}
    if entropy:
        rows_ = p.per_layer[p.per_layer.metric == "attn_entropy_ratio"]
        meas["attn_entropy_ratio"] = float(rows_[rows_.layer == rows_.layer.max()].value.mean())
    th = _theory_metrics(propagate(spec, c, K[0], samples=samples, seed=seed), depth, d.metrics)
    rows = []
    for m in d.metrics:
        gap = abs(meas[m] - th[m])
        ok = gap <= TOLERANCE[m] * (1.0 if m in ABSOLUTE else max(th[m], 1e-9))
        rows.append({"x": x, "y": y, "metric": m, "measured": meas[m], "theory": th[m], "gap": gap, "ok": bool(ok)})
    return rows


def check_diagrams(names: Sequence[str]) -> list[str]:
    """'all' or diagram names -> names, with a one-line error for an unknown one."""
    out = []
    for n in names:
        if n == "all":
            out += list(DIAGRAMS)
        elif n in DIAGRAMS:
            out.append(n)
        else:
            raise choice_error("phase diagram", n, ["all", *DIAGRAMS])
    if not out:
        raise SigpropError("no phase diagram given; accepted: all, " + ", ".join(DIAGRAMS))
    return list(dict.fromkeys(out))


__all__ = ["COLLAPSE_COS", "DIAGRAMS", "Diagram", "Phase", "TOLERANCE", "check_diagrams", "phase"]
