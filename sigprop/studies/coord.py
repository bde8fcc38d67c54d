"""Coordinate check (as in mup): activation scale of every probe point per layer against width, over the
first optimiser steps of training.

    c = sp.sweep(["pre-ln", "sas-p"], widths=[64, 128, 256], depths=4, seeds=2, coord_steps=5)
    c.df      # tidy: block, width, depth, seed, step, point, layer, metric ("rms"), value
    c.save(out)

At each step 0..k the model sees one fixed probe batch (forward only, eval mode) and the RMS of the
residual stream after every block, and of the attention and MLP branch outputs, is recorded; then one
training step runs with the paper's optimiser (AdamW, betas (0.9, 0.999), weight decay 0.1 on matrices,
clipping 1.0) at a constant learning rate. A parametrisation whose scales stay flat in width is stable
as it grows (Yang et al. 2021, "Tensor Programs V"); one whose RMS climbs with width after a step blows up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from sigprop.blocks import ModelConfig, Transformer, get_spec
from sigprop.probes import probe
from sigprop.runs import atomic_write_bytes
from sigprop.studies.analysis import input_tokens
from sigprop.training.config import TrainConfig
from sigprop.training.optim import make_optimizer

#: Probe points: the residual stream after each block and the two branch outputs (sigprop hook names).
POINTS = {"stream": None, "attn_out": "blocks.*.hook_attn_out", "mlp_out": "blocks.*.hook_mlp_out"}


def coord_point(block: str, sets: list[str], width: int, depth: int, seed: int, settings, cache_dir: str | None) -> pd.DataFrame:
    """Rows (step, point, layer, metric='rms', value) for one model trained `settings.coord_steps` steps."""
    s = settings
    steps = s.coord_steps
    tokens, vocab, _ = input_tokens(s.data, s.batch * (steps + 1), s.seq_len + 1 if s.data != "code" else s.seq_len,
                                    s.vocab_size, seed, cache_dir, False, s.max_bytes)
    if s.data == "code":  # code rows are seq_len long: predict tokens 1..T-1 from 0..T-2
        tokens = tokens[:, : s.seq_len]
    cfg = ModelConfig(depth=depth, width=width, heads=s.heads, vocab_size=vocab, context=tokens.shape[1], kind="decoder")
    torch.manual_seed(seed)
    model = Transformer(get_spec(block, sets), cfg)
    opt = make_optimizer(model, TrainConfig(lr=s.lr))
    batches = tokens.view(steps + 1, s.batch, -1)
    probe_idx = batches[0, :, :-1]
    rows = []
    for step in range(steps + 1):
        model.eval()
        with torch.no_grad(), probe(model, metrics=("norm_sq",)) as p_stream, \
                probe(model, POINTS["attn_out"], metrics=("norm_sq",)) as p_attn, \
                probe(model, POINTS["mlp_out"], metrics=("norm_sq",)) as p_mlp:
            model(probe_idx)
        for name, p, shift in (("stream", p_stream, 0), ("attn_out", p_attn, 1), ("mlp_out", p_mlp, 1)):
            m = p.metrics
            m = m[(m.metric == "norm_sq") & (m["head"] == -1)]
            rows += [{"step": step, "point": name, "layer": int(r.layer) + shift, "metric": "rms", "value": float(r.value) ** 0.5}
                     for r in m.itertuples()]
        if step == steps:
            break
        model.train()
        x = batches[step + 1]
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return pd.DataFrame(rows)


@dataclass(repr=False)
class CoordCheck:
    """The result of a coordinate-check sweep: RMS per (sweep variables, step, point, layer)."""

    df: pd.DataFrame
    variables: list[str]
    settings: object

    def summary(self) -> pd.DataFrame:
        """Mean RMS over seeds and layers >= 1 per (block, point, step, width): what the figure's lines average."""
        d = self.df[self.df.layer >= 1]
        keys = [v for v in self.variables if v != "seed"]
        return d.groupby([*keys, "point", "step"], sort=False)["value"].mean().reset_index(name="rms")

    def growth(self) -> pd.DataFrame:
        """Per (block, point, step): log2 ratio of the RMS at the largest to the smallest width, per doubling.

        About 0 = width-stable; > 0 = the scale grows with width (mup's warning sign)."""
        import numpy as np

        s = self.summary()
        keys = [v for v in self.variables if v not in ("seed", "width")]
        rows = []
        for key, g in s.groupby([*keys, "point", "step"], sort=False):
            g = g.sort_values("width")
            doublings = np.log2(g.width.iloc[-1] / g.width.iloc[0])
            rows.append({**dict(zip([*keys, "point", "step"], key)),
                         "log2_rms_per_doubling": float(np.log2(g.rms.iloc[-1] / g.rms.iloc[0]) / doublings) if doublings else 0.0})
        return pd.DataFrame(rows)

    def scale_text(self) -> str:
        s = self.settings
        return (f"coordinate check · H={s.heads}, T={s.seq_len}, batch {s.batch}, data {s.data}, AdamW lr {s.lr} "
                f"(constant), clip 1.0; line: mean over {self.df.seed.nunique()} seed(s)")

    def save(self, out: str | Path) -> list[Path]:
        from sigprop.plots import savefig
        from sigprop.plots.sweep import coord_figure
        out = Path(out)
        paths = [out / "coord.csv", out / "coord_growth.csv"]
        atomic_write_bytes(paths[0], self.df.to_csv(index=False).encode())
        atomic_write_bytes(paths[1], self.growth().to_csv(index=False).encode())
        paths += savefig(coord_figure(self.df, note=self.scale_text()), out / "coord_check")
        return paths

    def __repr__(self) -> str:
        return f"CoordCheck({len(self.df.drop_duplicates(self.variables))} models; {self.scale_text()})"
