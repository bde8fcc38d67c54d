"""Issue 30's GPU scripts on this machine: sigprop bench per attention implementation, benchmarks/gpu_profile.py,
benchmarks/mix_traffic.py and benchmarks/gpu_speed.sh at toy sizes (on CUDA where there is one, else on the CPU with
the Triton kernels in its interpreter). Apart from tests/test_fused.py, which gpu_speed.sh's smoke stage runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sigprop import SigpropError
from sigprop.perf.benchmark import bench, save_json
from test_fused import DEV, needs_triton

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_triton
def test_gpu_bench_times_each_implementation_side_by_side(tmp_path) -> None:
    df = bench(["pre-ln", "sas-p"], attn_impl="sdpa,fused", depth=1, width=32, heads=2, vocab=64, tokens=64, seq=16,
               mode="train", repeats=2, warmup=0, memory=False, progress=False, device=DEV.type)
    assert list(zip(df.block, df.path, df.attn_impl)) == [("pre-ln", "fast", "sdpa"), ("sas-p", "sdpa", "sdpa"),
                                                          ("sas-p", "fused", "fused")]
    assert df.attrs["settings"]["attn_impls"] == ("sdpa", "fused")
    side = _script("summary").side_by_side([str(save_json(df, tmp_path / "b.json"))])
    assert "| SAS-P (sdpa) | " in side and "| SAS-P (fused) | " in side
    with pytest.raises(SigpropError, match="attn_impl.*accepted"):
        bench(["sas-p"], attn_impl="triton", depth=1, width=32, heads=2, vocab=64, progress=False)


@needs_triton
def test_gpu_profile_tiny_says_where_the_time_and_memory_go(tmp_path) -> None:
    """benchmarks/gpu_profile.py at a tiny size on this device: every case timed, profiled and grouped, the fused mix
    found in its own group, and the fused SAS-P saving less for backward than the torch ops."""
    prof = _script("gpu_profile")
    assert prof.group_of("_mix_bwd", prof.KERNEL_GROUPS) == "shaped mix (fused Triton)"
    assert prof.group_of("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n", prof.KERNEL_GROUPS) == "matmul"
    assert prof.group_of("void at::native::vectorized_elementwise_kernel<4, MulFunctor>", prof.KERNEL_GROUPS) == "other elementwise"
    args = ["--device", DEV.type, "--depth", "2", "--width", "64", "--heads", "2", "--batch", "2", "--seq", "160",
            "--vocab", "128", "--warmup", "1", "--steps", "1", "--rows", "10", "--out", str(tmp_path)]
    assert prof.main(args) == 0
    cases = json.loads((tmp_path / "profile.json").read_text())["cases"]
    assert list(cases) == ["pre-ln", "sas-p (sdpa)", "sas-p (fused)"]
    assert cases["sas-p (fused)"]["groups"]["shaped mix (fused Triton)"] > 0
    assert "shaped mix (fused Triton)" not in cases["sas-p (sdpa)"]["groups"]
    saved = {n: c["saved_mb"]["activations"] for n, c in cases.items()}
    assert saved["sas-p (fused)"] < saved["sas-p (sdpa)"]
    md = (tmp_path / "profile.md").read_text()
    assert "| sas-p (fused) − pre-ln |" in md.splitlines()[2] and "MB saved for backward" in md
    assert len(list(tmp_path.glob("kernels_*.txt"))) == 3


def _gpu_speed(tmp_path, cache, **env) -> tuple[str, Path]:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "FIG": str(tmp_path / "fig"), "TINY": "1", "DEVICE": "cpu", "SCALE": "ci",
           "PY": sys.executable, "SIGPROP_CACHE": str(cache), "SMOKE_K": "auto_keeps", **env}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_speed.sh")], env=env, capture_output=True, text=True, timeout=420)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return (out / "gpu_speed.log").read_text(), out


@needs_triton
@pytest.mark.slow
def test_gpu_speed_script_runs_every_stage_at_toy_sizes(tmp_path, cache) -> None:
    """benchmarks/gpu_speed.sh end to end on this CPU (TINY, ci-scale seeds): every stage under its deadline, and $OUT
    holds three files (a device call returns at most eight): the log, summary.md and one tarball of everything."""
    log, out = _gpu_speed(tmp_path, cache, BUDGET_S="400")
    for stage in ("smoke-tests", "smoke-train", "profile", "bench-v256", "bench-v512", "seeds", "compile"):
        assert f"{stage}: rc=0" in log, log
    assert "reproduce rc=0" in log and "attn_impl sdpa" in log  # the seeds train on seed 0's code path
    assert sorted(p.name for p in out.iterdir()) == ["gpu_speed.log", "gpu_speed.tgz", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "| SAS-P (fused) |" in summary and "| sas-p (fused) − pre-ln |" in summary and "torch.compile" in summary
    with tarfile.open(out / "gpu_speed.tgz") as tar:
        names = set(tar.getnames())
        assert {"./gpu_fused_v256.json", "./gpu_fused_v512.json", "./gpu_fused_compile.json", "./profile/profile.json",
                "./scale/gpu_runs.tgz"} <= names
        with tarfile.open(fileobj=tar.extractfile("./scale/gpu_runs.tgz")) as runs:
            finished = {Path(n).parts[-2] for n in runs.getnames() if n.endswith("summary.json")}
    assert len(finished) == 2 and all("-paper-prefix-s1-" in r for r in finished)  # Pre-LN and SAS-P, seed 1


def test_gpu_speed_script_skips_a_stage_without_time_for_it(tmp_path, cache) -> None:
    log, out = _gpu_speed(tmp_path, cache, BUDGET_S="40", STAGES="profile,compile")
    assert "profile: skipped" in log and "compile: skipped" in log and "done" in log
    assert (out / "gpu_speed.tgz").exists()


@needs_triton
def test_gpu_mix_traffic_counts_less_for_the_fused_block(capsys) -> None:
    """benchmarks/mix_traffic.py at a tiny size: the fused SAS-P launches fewer ops, moves fewer bytes and saves less
    than today's torch ops, and the module state it patches (bf16 CPU SDPA, stubbed launches) is restored."""
    from sigprop.blocks import attention, triton_mix

    before = attention.CPU_FP32_SDPA_MAX_T, triton_mix.kernels
    assert _script("mix_traffic").main(["--batch", "2", "--scale-to", "4096", "--width", "64", "--heads", "2", "--seq", "32"]) == 0
    assert (attention.CPU_FP32_SDPA_MAX_T, triton_mix.kernels) == before
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [float(c) for c in line.split("|")[3:8]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| sas")}
    sdpa, fused = rows["sas-p", "sdpa"], rows["sas-p", "fused"]
    assert all(f < s for f, s in zip(fused, sdpa)), (fused, sdpa)  # ops, elementwise ops, GB, ms, MB saved


def test_gpu_speed_script_falls_back_to_the_torch_ops_when_the_kernel_tests_fail(tmp_path, cache) -> None:
    """A smoke whose kernel tests do not pass (here: none collected, pytest's rc 5) switches every later stage to
    attn_impl=sdpa, so the GPU call still profiles and benchmarks today's path."""
    log, out = _gpu_speed(tmp_path, cache, BUDGET_S="200", STAGES="smoke,profile", SMOKE_K="no_such_test")
    assert "every later stage uses attn_impl=sdpa" in log and "profile: rc=0" in log
    with tarfile.open(out / "gpu_speed.tgz") as tar:
        cases = json.loads(tar.extractfile("./profile/profile.json").read())["cases"]
    assert list(cases) == ["pre-ln", "sas-p (sdpa)"]
