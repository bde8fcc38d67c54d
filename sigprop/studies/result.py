"""What `analyze` returns: an `Analysis` (tidy metrics, kernels, theory and a one-line verdict per block) with its
tables, summary, figures and `save`; `verdict` reads rank collapse off a cos_mean profile."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sigprop.blocks import BlockSpec
from sigprop.errors import SigpropError
from sigprop.probes.metrics import COLLAPSE_COS, layer_exponent
from sigprop.studies.theory import TheoryResult

TABLE_METRICS = ("cos_mean", "eff_rank", "rank1_residual", "norm_sq")
OUTLIER_TABLE_METRICS = ("of_kurtosis", "max_median_ratio", "feat_corr_rms", "batch_corr_mean", "batch_corr_rms", "x_rms",
                         "massive_ratio", "sink_share", "sink_share_max")
#: analyze(..., attention=True): entropy / log(keys), heads averaged and the most uniform head; sigma_2 / sigma_1
ATTENTION_TABLE_METRICS = ("attn_entropy_ratio", "attn_entropy_ratio_max", "attn_sv_ratio")
GRAD_TABLE_METRICS = ("grad_norm", "grad_cos_mean", "grad_W_Q", "grad_W_K", "grad_W_V", "grad_mlp")


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

    def _measured(self, block: str, metrics: tuple[str, ...], what: str, flag: str) -> pd.DataFrame:
        """The measured `metrics` of `block`, one row per layer (indexed by layer); one line if the first is absent."""
        df = self.metrics[(self.metrics.block == block) & (self.metrics.source == "measured")]
        wide = df.pivot_table(index="layer", columns="metric", values="value")
        if metrics[0] not in wide:
            raise SigpropError(f"no {what} for {block!r}; run analyze(..., {flag}=True) (CLI: --{flag})")
        return wide[[m for m in metrics if m in wide]]

    def attention_table(self, block: str) -> pd.DataFrame:
        """One row per layer (from 1: attention lives in the blocks) with the softmax attention's entropy ratio and
        spectral ratio (analyze(..., attention=True))."""
        return self._measured(block, ATTENTION_TABLE_METRICS, "attention statistics", "attention").dropna(how="all").reset_index()

    def outlier_table(self, block: str) -> pd.DataFrame:
        """One row per layer with the outlier-feature statistics (analyze(..., outliers=True)) and theory's batch_corr_mean."""
        df = self.metrics[self.metrics.block == block]
        wide = self._measured(block, OUTLIER_TABLE_METRICS, "outlier statistics", "outliers")
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
