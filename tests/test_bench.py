"""`sigprop bench`: columns, ratios, parameter counts, FLOP counting, memory, errors, JSON, figure.

Tiny models only; no timing assertions (speed is reported, not tested).
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from sigprop import ModelConfig, SigpropError, build_model
from sigprop.perf.benchmark import bench, load_json, save_json
from sigprop.blocks.attention import RUNNING_MEAN_GEMM_MAX_T
from sigprop.blocks.spec import get_spec
from sigprop.perf.flops import model_flops_per_token
from sigprop.perf.probe_overhead import CADENCES, default_cadence, probe_overhead

TINY = dict(depth=2, width=32, heads=2, vocab=64, tokens=64, repeats=1, warmup=0, progress=False)
COLUMNS = {
    "block", "label", "path", "attn_impl", "mode", "seq", "batch", "dtype", "device", "params", "params_vs_base",
    "params_per_block", "ratio", "ratio_paired", "step_ms", "step_ms_min", "step_ms_max", "tokens_per_s", "gflop_per_token",
    "ideal", "tflops", "mfu", "mem_peak_mb", "mem_step_mb", "mem_step_kb_per_token",
}


@pytest.fixture(scope="module")
def result() -> pd.DataFrame:
    return bench(["pre-ln", "sas", "sas-p"], seq=16, mode="train,infer", **TINY)


def test_columns_rows_and_ratios(result):
    assert COLUMNS <= set(result.columns)
    assert len(result) == 3 * 2  # 3 blocks x 2 modes
    assert set(result["mode"]) == {"train", "infer"}
    base = result[result.block == "pre-ln"]
    assert (base.ratio == 1.0).all() and (base.params_vs_base == 0.0).all()
    for mode, g in result.groupby("mode"):
        b = g[g.block == "pre-ln"].tokens_per_s.iloc[0]
        assert g.ratio.tolist() == pytest.approx((g.tokens_per_s / b).tolist())
    assert (result.tokens_per_s > 0).all() and (result.mfu > 0).all()
    assert (result.batch * result.seq == 64).all()  # tokens per step kept
    assert result.attrs["peak_flops"] > 0 and result.attrs["settings"]["blocks"] == ("pre-ln", "sas", "sas-p")


def test_parameter_columns_match_num_params(result):
    cfg = ModelConfig(depth=2, width=32, heads=2, vocab_size=64, context=16)
    for r in result.itertuples():
        model = build_model(r.block, cfg)
        assert r.params == model.num_params()
        assert r.params_per_block == sum(p.numel() for p in model.blocks[-1].parameters() if p.requires_grad)
    pre = result[result.block == "pre-ln"].params.iloc[0]
    sas = result[result.block == "sas"].params.iloc[0]
    assert result[result.block == "sas"].params_vs_base.iloc[0] == pytest.approx(sas / pre - 1)
    assert sas < pre  # no W^V / W^P


def test_memory_is_measured(result):
    assert (result.mem_peak_mb > result.mem_step_mb).all() and (result.mem_step_mb > 0).all()
    train = result[result["mode"] == "train"].set_index("block")
    infer = result[result["mode"] == "infer"].set_index("block")
    assert (train.mem_peak_mb > infer.mem_peak_mb).all()  # gradients + AdamW state + saved activations


def test_explicit_path_holds_the_txt_matrix():
    df = bench(["sas"], depth=1, width=16, heads=2, vocab=32, seq=128, batch=2, repeats=1, warmup=0,
               explicit=True, mode="train", progress=False)
    rows = df.set_index(["block", "path"])
    assert set(df.path) == {"fast", "explicit"}
    assert rows.loc[("pre-ln", "fast"), "ratio"] == 1.0  # baseline added automatically
    fast, expl = rows.loc[("sas", "fast"), "mem_step_mb"], rows.loc[("sas", "explicit"), "mem_step_mb"]
    txt_mb = 2 * 2 * 128 * 128 * 4 / 2**20  # one (B, H, T, T) fp32 matrix
    assert expl - fast > txt_mb


def test_baseline_is_added_and_first():
    df = bench(["sas-p"], seq=8, memory=False, **TINY)
    assert df.block.tolist() == ["pre-ln", "sas-p"]
    assert df.mem_peak_mb.isna().all()


@pytest.mark.parametrize("block", ["pre-ln", "sas-p", "v-skipinit"])
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_model_flops_match_the_flop_counter(block, mode):
    """Our count of matmul FLOPs (identity V/P free, frozen W_init without weight grad) equals torch's
    FlopCounterMode on the same step; the CPU SDPA kernel is not counted there, so its term is removed. Shaped
    attention's running mean C V runs as a GEMM with the constant (T, T) matrix C at this T (an implementation
    choice; model FLOPs count it as the O(T d) cumsum it is), so the counter also sees 2 T d per token and layer
    forward and as much again for its input gradient."""
    torch.manual_seed(0)
    model = build_model(block, depth=2, width=16, heads=2, vocab_size=32, context=16)
    idx = torch.randint(0, 32, (2, 16))
    with FlopCounterMode(display=False) as fc:
        if mode == "train":
            model(idx, idx)[1].backward()
        else:
            with torch.no_grad():
                model(idx)
    attn = 2 * 4 * 16 * (16 + 1) / 2 * (3 if mode == "train" else 1)  # 2 layers, causal keys
    running_mean = 2 * 2 * 16 * 16 * (2 if mode == "train" else 1) if get_spec(block).attention == "shaped" else 0
    assert 16 <= RUNNING_MEAN_GEMM_MAX_T
    assert model_flops_per_token(model, 16, mode) - attn + running_mean == pytest.approx(fc.get_total_flops() / idx.numel())


def test_sas_saves_the_value_and_projection_flops():
    cfg = ModelConfig(depth=3, width=64, heads=4, vocab_size=128, context=32)
    pre, sas = build_model("pre-ln", cfg), build_model("sas", cfg)
    # SAS drops 2 d^2 matmul weights per block, except block 1 which keeps W^V = I + dW (footnote 6).
    saved = model_flops_per_token(pre, 32, "infer") - model_flops_per_token(sas, 32, "infer")
    assert saved == pytest.approx(2 * 64**2 * (2 * 3 - 1))
    assert model_flops_per_token(pre, 32, "train") > 2.9 * model_flops_per_token(pre, 32, "infer")


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(blocks=["pre-ln", "sass"]), "'sass'"),
        (dict(device="tpu"), "'tpu'"),
        (dict(dtype="fp8"), "'fp8'"),
        (dict(mode="serve"), "'serve'"),
        (dict(seq="128,x"), "128,x"),
        (dict(repeats=0), "repeats"),
    ],
)
def test_bad_input_is_one_line(kwargs, bad):
    with pytest.raises(SigpropError) as e:
        bench(**{**dict(progress=False), **kwargs})
    msg = str(e.value)
    assert "\n" not in msg and bad in msg
    if "seq" not in kwargs and "repeats" not in kwargs:
        assert "accepted:" in msg


def test_cuda_unavailable_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SigpropError, match="'cuda' is not available"):
        bench(device="cuda", progress=False)


def test_json_round_trip(tmp_path, result):
    path = save_json(result, tmp_path / "sub" / "bench.json")
    back = load_json(path)
    pd.testing.assert_frame_equal(back, result, check_dtype=False)
    assert back.attrs["peak_flops"] == result.attrs["peak_flops"]
    assert back.attrs["settings"]["depth"] == 2
    assert not [p for p in path.parent.iterdir() if p.name != "bench.json"]  # no temp files left
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SigpropError, match="not a sigprop bench JSON"):
        load_json(tmp_path / "bad.json")
    with pytest.raises(SigpropError, match="no benchmark file"):
        load_json(tmp_path / "missing.json")


def test_cli_table_json_and_figure(tmp_path):
    from sigprop.cli import app

    out = tmp_path / "figs"
    res = CliRunner().invoke(app, [
        "bench", "--blocks", "pre-ln,sas-p", "--depth", "1", "--width", "32", "--heads", "2", "--vocab", "64",
        "--tokens", "64", "--seq", "16", "--repeats", "1", "--warmup", "0", "--json", str(tmp_path / "b.json"),
        "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    assert "SAS-P" in res.output and "Pre-LN" in res.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["block"] for r in doc["rows"]] == ["pre-ln", "sas-p"] and doc["peak_flops"] > 0
    assert (out / "bench.png").stat().st_size > 0 and (out / "bench.pdf").stat().st_size > 0
    bad = CliRunner().invoke(app, ["bench", "--blocks", "nope"])
    assert isinstance(bad.exception, SigpropError)


def test_cli_probes_before_and_after(tmp_path):
    from sigprop.cli import app

    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, [
        "bench", "--blocks", "pre-ln", "--depth", "1", "--width", "32", "--heads", "2", "--vocab", "64", "--tokens", "64",
        "--seq", "16", "--repeats", "1", "--warmup", "0", "--no-memory", "--probes", "--probe-batch", "2",
        "--json", str(tmp_path / "p.json"),
    ])
    assert res.exit_code == 0, res.output
    assert "before / step" in res.output
    rows = json.loads((tmp_path / "p.json").read_text())["probes"]
    assert rows[0]["probe_before_ms"] > 0 and rows[0]["probe_ms"] > 0


def test_table_keeps_the_key_columns_on_a_narrow_terminal(result):
    from sigprop.cli.bench import COMPACT, bench_table

    wide, narrow = bench_table(result, width=200), bench_table(result, width=80)
    assert [c.header for c in narrow.columns] == list(COMPACT)
    assert len(wide.columns) == 13 and {"ratio", "ms/step", "step KB/tok"} <= {c.header for c in wide.columns}
    assert narrow.row_count == wide.row_count == len(result)


def test_sweep_figure(tmp_path):
    from sigprop.plots.bench import plot_bench

    df = bench(["sas"], seq="16,32", explicit=True, depth=1, width=16, heads=2, vocab=32, tokens=64,
               repeats=1, warmup=0, progress=False)
    assert sorted(df.seq.unique()) == [16, 32] and len(df) == 2 * 3  # pre-ln fast, sas fast + explicit
    files = plot_bench(df, tmp_path / "sweep")
    assert [f.suffix for f in files] == [".png", ".pdf"] and all(f.stat().st_size > 0 for f in files)


def test_default_cadence_keeps_the_budget():
    assert default_cadence(0.0) == 1
    assert default_cadence(0.03) == 1
    assert default_cadence(0.5) == 20  # 0.5 / 20 = 2.5% <= 3%, 0.5 / 10 = 5% > 3%
    assert default_cadence(1e9) == CADENCES[-1]
    for x in (0.07, 0.31, 1.7, 4.0):
        n = default_cadence(x)
        assert x / n <= 0.03 and (n == CADENCES[0] or x / CADENCES[CADENCES.index(n) - 1] > 0.03)


def test_probe_overhead_rows():
    df = probe_overhead(["pre-ln", "sas"], depth=1, width=32, heads=2, seq=16, batch=4, probe_batch=2,
                        vocab=64, repeats=1, warmup=0, progress=False)
    assert df.block.tolist() == ["pre-ln", "sas"]
    assert (df.probe_ms > 0).all() and (df.step_ms > 0).all() and (df.probe_before_ms > 0).all()
    assert df.probe_before_per_step.tolist() == pytest.approx((df.probe_before_ms / df.step_ms).tolist())
    for r in df.itertuples():
        assert r.cadence == default_cadence(r.probe_per_step)
        assert math.isclose(r.overhead, r.probe_per_step / r.cadence)


def test_paired_ratio_is_one_for_the_baseline(result):
    base = result[result.block == "pre-ln"]
    assert (base.ratio_paired == 1.0).all() and (result.ratio_paired > 0).all()
