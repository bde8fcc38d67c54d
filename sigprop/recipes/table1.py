"""Table 1 (efficiency columns): parameters and relative training throughput per block in the encoder
(Crammed BERT) setting, measured with `sigprop.perf.benchmark`, plus exact parameter counts at the paper's sizes
(claim 12). GLUE scores are out of reach of this toolkit and are not attempted."""

from __future__ import annotations

import pandas as pd
import torch

from sigprop.blocks import build_model
from sigprop.perf.benchmark import bench
from sigprop.plots.bench import plot_bench
from sigprop.recipes.base import Context, Recipe, RunPlan, verdict
from sigprop.runs import atomic_write_bytes

BLOCKS = ("pre-ln", "parallel", "v-skipinit", "sas", "sas-p", "sas-p-nonorm")
#: bench settings per scale (the paper row: 16x768 encoder, V=32768, T=128, on a GPU)
BENCH = {
    "ci": dict(depth=2, width=64, heads=2, seq=32, tokens=256, vocab=512, repeats=2, warmup=1, memory=False),
    "cpu": dict(depth=6, width=256, heads=4, seq=128, tokens=2048, vocab=8192, repeats=5, warmup=2, memory=True),
    "paper": dict(depth=16, width=768, heads=12, seq=128, tokens=128 * 64, vocab=32768, repeats=10, warmup=3, device="cuda", dtype="bf16"),
}
#: the paper's models whose parameter counts Table 1 and footnote 7 quote: (name, depth, width, heads, V, kind)
PAPER_MODELS = (("CodeParrot 18x768, V=50K", 18, 768, 12, 50000, "decoder"), ("Crammed BERT 16x768, V=32768", 16, 768, 12, 32768, "encoder"))


def runs(scale: str) -> list[RunPlan]:
    return []


def paper_params() -> pd.DataFrame:
    """Exact parameter counts at the paper's sizes (built on the meta device: no memory, no init cost)."""
    rows = []
    for name, depth, width, heads, vocab, kind in PAPER_MODELS:
        for b in BLOCKS:
            with torch.device("meta"):
                m = build_model(b, depth=depth, width=width, heads=heads, vocab_size=vocab, context=128, kind=kind)
            rows.append({"model": name, "block": b, "params": m.num_params()})
    df = pd.DataFrame(rows)
    df["params_vs_pre_ln"] = df.params / df.groupby("model").params.transform(lambda p: p.iloc[0]) - 1
    return df


def make(ctx: Context) -> dict:
    settings = BENCH[ctx.scale]
    df = bench(list(BLOCKS), kind="encoder", progress=ctx.progress, **settings)
    plot_bench(df, ctx.out / "table1")
    cols = ["block", "params", "params_vs_base", "tokens_per_s", "ratio", "ideal", "step_ms"]
    fast = df[(df.path == "fast") & (df["mode"] == "train")][cols].reset_index(drop=True)
    atomic_write_bytes(ctx.out / "table1.csv", fast.to_csv(index=False).encode())
    pp = paper_params()
    atomic_write_bytes(ctx.out / "paper_params.csv", pp.to_csv(index=False).encode())
    ratio = dict(zip(fast.block, fast.ratio.astype(float)))
    cut = {m: float(-d.set_index("block").loc["sas", "params_vs_pre_ln"]) for m, d in pp.groupby("model")}
    fastest = max(ratio, key=ratio.get)
    ok = all(0.12 <= c <= 0.17 for c in cut.values()) and fastest in ("sas-p", "sas-p-nonorm")
    ev = ("SAS parameter cut: " + ", ".join(f"{m} {c:.1%}" for m, c in cut.items())
          + "; train speed vs Pre-LN: " + ", ".join(f"{b} {r:.2f}" for b, r in ratio.items()) + f"; fastest {fastest}")
    s = df.attrs.get("settings", {})
    note = (f"table1 at scale {ctx.scale}: encoder {s.get('depth')}x{s.get('width')}, V={s.get('vocab')}, T={settings['seq']}, "
            f"{s.get('dtype')} on {s.get('device')}, median of {s.get('repeats')} interleaved repeats")
    return {"note": note, "numbers": {"speed_vs_pre_ln": ratio, "params": dict(zip(fast.block, fast.params.astype(int))),
                                      "paper_size_params": pp.to_dict(orient="records")}, "claims": [verdict(12, ok, ev)]}


RECIPE = Recipe(
    name="table1", paper="Table 1", claims=(12,), runs=runs, make=make,
    shows="parameters and training throughput relative to Pre-LN per block (encoder), exact counts at paper sizes",
    runtime={"ci": "~15 s", "cpu": "~2-5 min", "paper": "~5 min GPU"},
)
