"""The scripts under benchmarks/ run on tiny models: the op profile groups kernels, summary tables read bench JSON."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from sigprop.perf.benchmark import bench, save_json

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_op_profile_groups_and_shaped_extras():
    prof = _load("profile_ops")
    assert prof.group_of("aten::mm") == "matmul"
    assert prof.group_of("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "attention kernel (SDPA)"
    assert prof.group_of("aten::cumsum") == "shaped attention extras"
    df = prof.profile_blocks(["pre-ln", "sas-p"], "fp32", 1, 32, 2, 2, 64, rounds=1, steps=1)
    assert (df.loc["matmul"] > 0).all()
    # Only shaped attention computes the causal running mean C V (cumsum) and the addcmul combination.
    assert df.loc["shaped attention extras", "sas-p"] > 0
    assert df.loc["shaped attention extras", "pre-ln"] == 0
    assert df.loc["total"].tolist() == pytest.approx(df.drop("total").sum().tolist())
    table = prof.markdown(df, "pre-ln")
    assert "| **total** |" in table and "Pre-LN − SAS-P" in table


def test_summary_tables_from_bench_json(tmp_path):
    summary = _load("summary")
    df = bench(["pre-ln", "sas-p"], depth=1, width=32, heads=2, vocab=64, tokens=64, seq=16, mode="train,infer",
               repeats=1, warmup=0, memory=False, progress=False)
    path = str(save_json(df, tmp_path / "b.json"))
    assert df.attrs["settings"]["malloc_tuned"] is sys.platform.startswith("linux")
    rows = summary.markdown(path).splitlines()
    assert sum(r.startswith("| SAS-P |") for r in rows) == 2  # train and infer
    side = summary.side_by_side([path, path]).splitlines()
    assert side[0].count("1×32 V=64 fp32 train") == 2
    assert side[2].startswith("| SAS-P | ") and side[-1].startswith("| FLOP ideal")


def test_gpu_scale_script_packs_the_recipes_records_at_ci_scale(tmp_path, cache):
    """benchmarks/gpu_scale.sh end to end on a CPU at the ci scale (smoke and bench skipped): the data stage, the gpu
    recipe's runs, and a tarball of the records without checkpoints, all under its own deadline."""
    import os
    import subprocess
    import tarfile

    env = {**os.environ, "SCALE": "ci", "FIG": str(tmp_path / "fig"), "OUT": str(tmp_path / "out"), "SKIP": "smoke,bench",
           "PY": sys.executable, "SIGPROP_CACHE": str(cache), "BUDGET_S": "240"}
    res = subprocess.run(["bash", str(ROOT / "gpu_scale.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    log = (tmp_path / "out" / "gpu_scale.log").read_text()
    assert "reproduce rc=0" in log and "data rc=0" in log
    with tarfile.open(tmp_path / "out" / "gpu_runs.tgz") as tar:
        names = tar.getnames()
    runs = {Path(n).parts[-2] for n in names if n.endswith("summary.json")}
    assert len(runs) == 7 and not any("checkpoints" in n for n in names)
