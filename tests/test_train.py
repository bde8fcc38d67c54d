"""The training engine at the ci scale: schedule, groups, a real run that learns, exact resume, clean stops,
NaN handling, bad checkpoints, MLM, gradient accumulation, and the `train` / `compare` commands."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sigprop.blocks import get_spec as sp_get_spec
import torch

from sigprop.blocks import build_model, get_spec
from sigprop.cli.train import probe_note
from sigprop.errors import SigpropError
from sigprop.runs import load_runs
from sigprop.training import SCALES, TrainingDiverged, get_config, lr_at, train
from sigprop.training.batches import micro_batches
from sigprop.training.optim import make_optimizer

REPO = Path(__file__).resolve().parents[1]


def ci(block, out, data, **kw):
    return train(block, "ci", out, data=data, quiet=True, **kw)


# ------------------------------------------------------------------------------------------------ pure parts


def test_schedule_warmup_then_linear_decay():
    kw = dict(lr=1e-3, steps=100, warmup_steps=5)
    assert lr_at(0, **kw) == pytest.approx(2e-4)
    assert lr_at(4, **kw) == pytest.approx(1e-3)  # peak at the end of warm-up
    assert lr_at(5, **kw) == pytest.approx(1e-3)
    assert lr_at(52, **kw) == pytest.approx(1e-3 * (1 - 47 / 95))
    assert 0 < lr_at(99, **kw) < 2e-5  # decays to ~0 at the last update
    lrs = [lr_at(s, **kw) for s in range(5, 100)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(80, schedule="constant", **kw) == 1e-3
    assert lr_at(5, schedule="cosine", **kw) == pytest.approx(1e-3)
    assert lr_at(99, schedule="cosine", **kw) < 1e-6


def test_one_scale_table_the_cpu_scale_is_the_long_scale_recipes_decide_claims_at():
    """One meaning per name (issue 26): train/compare's 'cpu' is reproduce's long scale, and the demo scale names itself."""
    from sigprop.recipes.base import BASE
    from sigprop.training.compare import plan_text

    assert SCALES["cpu"] == BASE["cpu"]
    assert (SCALES["cpu"].depth, SCALES["cpu"].width, SCALES["cpu"].steps, SCALES["cpu"].lr) == (4, 128, 2000, 4e-3)
    assert "plateau" in plan_text([sp_get_spec("sas-p")], SCALES["demo"]) and "plateau" not in plan_text([sp_get_spec("sas-p")], SCALES["cpu"])
    assert "min" in plan_text([sp_get_spec("sas-p")], SCALES["cpu"])


def test_scales_and_overrides():
    assert SCALES["paper"].depth == 18 and SCALES["paper"].width == 768 and SCALES["paper"].batch_size == 128
    assert SCALES["paper"].warmup_steps == 2000 and SCALES["paper"].lr == 1e-3 and SCALES["paper"].weight_decay == 0.1
    assert (SCALES["paper"].beta1, SCALES["paper"].beta2) == (0.9, 0.999)
    cfg = get_config("ci", steps=7, lr=3e-4, width=None)
    assert (cfg.steps, cfg.lr, cfg.width) == (7, 3e-4, SCALES["ci"].width)
    with pytest.raises(SigpropError, match="unknown scale 'huge'; accepted: ci, cpu, demo, paper"):
        get_config("huge")
    with pytest.raises(SigpropError, match="unknown training option 'stepz'"):
        get_config("ci", stepz=3)
    with pytest.raises(SigpropError, match="batch_size 8 is not divisible by grad_accum 3"):
        get_config("ci", grad_accum=3)
    with pytest.raises(SigpropError, match="unknown precision 'fp8'"):
        get_config("ci", precision="fp8")


def test_optimizer_groups_decay_only_matrices_and_qk_lr():
    model = build_model("sas-p", depth=2, width=32, heads=4, vocab_size=50, context=8)
    opt = make_optimizer(model, get_config("ci", qk_lr_mult=0.1))
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["embed.wte.weight"])]["weight_decay"] == 0.1
    assert by_id[id(named["blocks.0.mlp.w_in.weight"])]["weight_decay"] == 0.1
    for gain in ("blocks.0.beta_ff", "blocks.0.attn.alpha", "blocks.1.ln_1.weight", "blocks.0.attn.value.alpha"):
        assert by_id[id(named[gain])]["weight_decay"] == 0.0, gain
    q = by_id[id(named["blocks.1.attn.w_q.weight"])]
    assert q["lr_mult"] == 0.1 and q["weight_decay"] == 0.1
    assert by_id[id(named["blocks.1.mlp.w_out.weight"])]["lr_mult"] == 1.0
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_micro_batches_split_the_global_batch_rank_major():
    x = torch.arange(8)[:, None].expand(8, 3)
    parts = [micro_batches(x, x, r, 2, 2) for r in range(2)]
    rows = [int(xm[i, 0]) for p in parts for xm, _ in p for i in range(len(xm))]
    assert rows == list(range(8))
    with pytest.raises(SigpropError, match="not divisible by processes x grad_accum = 3 x 1"):
        micro_batches(x, x, 0, 3, 1)


# ------------------------------------------------------------------------------------------------ a real run


def test_ci_run_learns_and_writes_the_run_store(tmp_path, data):
    run = ci("sas-p", tmp_path / "r", data, steps=30, lr=3e-3)
    assert run.status == "done" and run.step == 30
    for name in ("config.json", "env.json", "metrics.jsonl", "probes.jsonl", "summary.json", "checkpoints/last.pt"):
        assert (tmp_path / "r" / name).exists(), name
    m = run.metrics()
    assert list(m["step"]) == list(range(1, 31))
    assert {"time", "tokens", "lr", "loss", "grad_norm", "eval_loss", "wall"} <= set(m.columns)
    assert m["tokens"].iloc[-1] == 30 * 8 * 32
    ev = m.dropna(subset=["eval_loss"])
    assert list(ev["step"]) == [10, 20, 30]
    assert m["loss"].iloc[:3].mean() > math.log(512) - 0.2  # starts near uniform over the vocabulary
    assert ev["eval_loss"].iloc[-1] < m["loss"].iloc[0] - 0.5  # and really learns
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["block"] == "sas-p" and cfg["spec"]["attention"] == "shaped" and cfg["train"]["steps"] == 30
    assert cfg["model"]["vocab_size"] == data.vocab_size and cfg["data"] == data.fingerprint
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["threads"] >= 1 and env["device"] == "cpu"
    s = run.summary
    assert s["final_eval_loss"] == pytest.approx(ev["eval_loss"].iloc[-1]) and s["params"] > 0 and s["tokens_per_s"] > 0
    assert s["probe_passes"] == 4 and 0 < s["probe_time_frac"] < 1  # what the probes cost (issue 30)
    assert s["probe_pass_s"] > 0 and s["probe_per_step"] == pytest.approx(s["probe_pass_s"] / (s["train_time_s"] / 30))

    p = run.probes()
    assert sorted(p["step"].unique()) == [0, 10, 20, 30]
    cos = p[(p.source == "probe") & (p.metric == "cos_mean")]
    assert set(cos["layer"]) == {0, 1, 2}  # embedding + 2 blocks, every probe step
    alpha = p[(p.source == "gain") & (p.metric == "alpha")]
    assert set(alpha["head"]) == {0, 1}  # per head
    a0, a30 = (alpha[alpha.step == s].set_index(["layer", "head"])["value"] for s in (0, 30))
    assert (a0 == 1.0).all() and (a30 - a0).abs().max() > 1e-3  # trained shaped-attention gains move
    assert not p[(p.source == "gain") & (p.metric == "beta_v/alpha_v")].empty  # first-layer W^V (Fig. 4 ratio)


def test_never_overwrites_and_overwrite_replaces(tmp_path, data):
    ci("pre-ln", tmp_path / "r", data, steps=2, probe_every=0)
    with pytest.raises(SigpropError) as e:
        ci("pre-ln", tmp_path / "r", data, steps=2)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "r") in msg and "--resume" in msg and "--overwrite" in msg
    run = ci("sas", tmp_path / "r", data, steps=3, probe_every=0, overwrite=True)
    assert run.status == "done" and len(run.metrics()) == 3
    assert json.loads((tmp_path / "r" / "config.json").read_text())["block"] == "sas"


def test_resume_is_bit_for_bit(tmp_path, data, capsys):
    """12 steps straight == 6 steps, SIGINT, resume for 6 more: the same losses, grad norms, evals, probes exactly."""
    straight = ci("sas-p", tmp_path / "a", data, steps=12, probe_every=3, eval_every=4)

    def interrupt(step, rec):
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)

    first = ci("sas-p", tmp_path / "b", data, steps=12, probe_every=3, eval_every=4, callback=interrupt)
    assert first.status == "interrupted" and first.step == 6
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "interrupted"
    resumed = train(None, None, tmp_path / "b", resume=True, data=data, quiet=True)  # block and scale from the run
    assert resumed.status == "done" and resumed.step == 12
    a, b = straight.metrics(), resumed.metrics()
    assert list(b["step"]) == list(range(1, 13))
    assert a["loss"].tolist() == b["loss"].tolist()
    assert a["grad_norm"].tolist() == b["grad_norm"].tolist()
    assert a["eval_loss"].dropna().tolist() == b["eval_loss"].dropna().tolist()
    pa, pb = straight.probes(), resumed.probes()
    assert pa["value"].tolist() == pb["value"].tolist()
    sessions = json.loads((tmp_path / "b" / "env.json").read_text())["sessions"]
    assert [s["from_step"] for s in sessions] == [0, 6]
    with pytest.raises(SigpropError, match="cannot resume: lr=0.5"):
        ci("sas-p", tmp_path / "b", data, steps=12, lr=0.5, resume=True)
    again = train(None, None, tmp_path / "b", resume=True, data=data)  # a finished run stays finished
    assert again.step == 12 and again.summary == resumed.summary
    assert len(again.metrics()) == 12
    assert "already finished (12/12 steps); nothing to train" in capsys.readouterr().err


def test_grad_accumulation_matches_one_big_batch(tmp_path, data):
    one = ci("pre-ln", tmp_path / "a", data, steps=6, probe_every=0).metrics()
    acc = ci("pre-ln", tmp_path / "b", data, steps=6, probe_every=0, grad_accum=4).metrics()
    assert acc["loss"].tolist() == pytest.approx(one["loss"].tolist(), rel=1e-5)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, data):
    holder = {}

    def poison(step, rec):
        if step == 5:
            with torch.no_grad():
                next(iter(holder["model"].parameters())).fill_(float("nan"))

    orig = torch.optim.AdamW.__init__

    def capture(self, groups, *a, **k):  # grab the model's parameters through the optimiser
        orig(self, groups, *a, **k)
        holder["model"] = torch.nn.ParameterList([p for g in self.param_groups for p in g["params"]])

    torch.optim.AdamW.__init__ = capture
    try:
        with pytest.raises(TrainingDiverged) as e:
            ci("pre-ln", tmp_path / "r", data, steps=20, ckpt_every=4, probe_every=0, callback=poison)
    finally:
        torch.optim.AdamW.__init__ = orig
    msg = str(e.value)
    assert "\n" not in msg and "is nan at step 6" in msg and "last.pt (step 4)" in msg
    from sigprop.training.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "diverged"


def test_corrupt_or_incompatible_checkpoint_is_one_line(tmp_path, data):
    ci("pre-ln", tmp_path / "r", data, steps=4, ckpt_every=2, probe_every=0)
    ck = tmp_path / "r" / "checkpoints" / "last.pt"
    good = ck.read_bytes()
    ck.write_bytes(good[: len(good) // 2])
    with pytest.raises(SigpropError) as e:
        ci("pre-ln", tmp_path / "r", data, steps=4, resume=True)
    assert "corrupt checkpoint" in str(e.value) and "\n" not in str(e.value)
    ck.write_bytes(good)
    with pytest.raises(SigpropError, match="cannot resume: the block differs"):
        ci("sas", tmp_path / "r", data, steps=4, resume=True)
    with pytest.raises(SigpropError, match=r"cannot resume: width=32 \(run has 64\)"):
        ci("pre-ln", tmp_path / "r", data, steps=4, width=32, resume=True)
    with pytest.raises(SigpropError, match="nothing to resume"):
        ci("pre-ln", tmp_path / "empty", data, resume=True)


def test_encoder_mlm_and_bf16(tmp_path, data):
    run = ci("sas", tmp_path / "mlm", data, kind="encoder", steps=12, lr=3e-3, probe_every=0, eval_every=6)
    m = run.metrics()
    assert m["loss"].notna().all() and m["eval_loss"].dropna().iloc[-1] < m["loss"].iloc[0] - 0.3
    assert json.loads((tmp_path / "mlm" / "config.json").read_text())["model"]["kind"] == "encoder"
    bf = ci("pre-ln", tmp_path / "bf16", data, steps=4, precision="bf16", probe_every=0)
    assert bf.summary["precision"] == "bf16" and bf.metrics()["loss"].map(math.isfinite).all()


# ------------------------------------------------------------------------------------------------ CLI


def _cli(args, cache, timeout=120, **popen):
    env = {**os.environ, "SIGPROP_CACHE": str(cache), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sigprop", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture()
def runner(cache, monkeypatch):
    from typer.testing import CliRunner

    from sigprop.cli import app

    monkeypatch.setenv("SIGPROP_CACHE", str(cache))
    return lambda args: CliRunner().invoke(app, args)


def test_train_output_says_what_the_probes_cost() -> None:
    s = {"probe_passes": 21, "probe_time_frac": 0.021, "probe_per_step": 0.12}
    assert probe_note(s) == ", probes 2.1% of wall time (one pass = 0.12 steps)"
    assert probe_note({**s, "probe_passes": 0}) == "" and probe_note({}) == ""


def test_cli_train_sets_knobs_and_refuses_an_existing_dir(tmp_path, runner, data):
    out = tmp_path / "cli"
    r = runner(["train", "--block", "sas-p", "--scale", "ci", "--out", str(out), "--steps", "3", "--quiet", "--set", "beta_ff=0.3"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["spec"]["beta_ff"] == 0.3
    r = runner(["train", "--block", "sas-p", "--scale", "ci", "--out", str(out), "--quiet"])
    assert isinstance(r.exception, SigpropError) and "--resume" in str(r.exception) and "--overwrite" in str(r.exception)
    r = runner(["train", "--out", str(out), "--resume", "--steps", "5", "--quiet"])
    assert isinstance(r.exception, SigpropError) and "cannot resume: steps=5 (run has 3)" in str(r.exception)
    r = runner(["train", "--block", "nope", "--scale", "ci", "--out", str(tmp_path / "x"), "--quiet"])
    assert isinstance(r.exception, SigpropError) and "unknown block 'nope'" in str(r.exception)


def test_cli_train_probe_grad_records_gradients(tmp_path, runner, data):
    """--probe-grad turns on the gradient and update-ratio probes; without it there are none."""
    for flag, sources in (("--probe-grad", {"probe", "gain", "grad", "update"}), ("--no-probe-grad", {"probe", "gain"})):
        out = tmp_path / flag
        r = runner(["train", "--scale", "ci", "--out", str(out), "--steps", "2", "--probe-every", "1", "--quiet", flag])
        assert r.exit_code == 0, r.output
        assert {json.loads(line)["source"] for line in (out / "probes.jsonl").read_text().splitlines()} == sources


def test_cli_sigint_checkpoints_and_says_how_to_resume(tmp_path, cache, data):
    """A real process stopped by Ctrl-C: finishes its step, writes the checkpoint, exits 130 with a hint."""
    out = tmp_path / "sig"
    env = {**os.environ, "SIGPROP_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "sigprop", "train", "--block", "pre-ln", "--scale", "ci", "--out", str(out),
                             "--steps", "100000", "--quiet", "--probe-every", "0"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and f"Resume with: sigprop train --out {out} --resume" in err
    from sigprop.training.checkpoint import load_checkpoint

    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == last
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_cli_compare_trains_reuses_and_plots(tmp_path, runner, data):
    out = tmp_path / "cmp"
    args = ["compare", "--blocks", "pre-ln,sas-p", "--scale", "ci", "--out", str(out), "--steps", "4", "--eval-every", "2", "--probe-every", "2", "--quiet"]
    r = runner(args)
    assert r.exit_code == 0, r.output
    import pandas as pd

    table = pd.read_csv(out / "summary.csv")
    assert list(table["block"]) == ["pre-ln", "sas-p"]
    assert {"params", "final_eval_loss", "tokens_per_s", "wall_time_s"} <= set(table.columns)
    assert table.loc[1, "params"] < table.loc[0, "params"]  # SAS-P drops W^V, W^P
    for f in ("loss.png", "loss.pdf", "probes.png"):
        assert (out / f).stat().st_size > 1000, f
    runs = load_runs(str(out / "*"))
    assert set(runs.metrics["run"]) == {"pre-ln", "sas-p"} and set(runs.configs["block"]) == {"pre-ln", "sas-p"}
    # both saw the same batches: same data fingerprint and seed
    assert runs.configs["data.sha256"].nunique() == 1 and runs.configs["train.seed"].nunique() == 1
    before = (out / "pre-ln" / "metrics.jsonl").stat().st_mtime_ns
    r = runner(args[:-1])
    assert r.exit_code == 0 and "reusing finished run" in r.output
    assert (out / "pre-ln" / "metrics.jsonl").stat().st_mtime_ns == before


def test_vp_lr_mult_gives_values_and_projections_their_own_lr():
    """Fig. 9: only W^V and W^P (dense weights, or Eq. 6's dW) get the multiplier; their gains and W^Q do not."""
    for block, names in (("v-skipinit", ("attn.value.weight", "attn.proj.weight")),
                         (get_spec("v-skipinit").replace(value="reparam", proj="reparam", value_init="identity",
                                                         proj_init="identity", beta_v=0.5, beta_p=0.5), ("attn.value.delta", "attn.proj.delta"))):
        model = build_model(block, depth=2, width=32, heads=4, vocab_size=50, context=8)
        opt = make_optimizer(model, get_config("ci", vp_lr_mult=0.25))
        by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
        named = dict(model.named_parameters())
        for n in names:
            assert by_id[id(named[f"blocks.1.{n}"])]["lr_mult"] == 0.25, n
        for n in ("blocks.1.attn.w_q.weight", "blocks.1.mlp.w_in.weight", "blocks.0.attn.alpha"):
            assert by_id[id(named[n])]["lr_mult"] == 1.0, n
    with pytest.raises(SigpropError, match="vp_lr_mult"):
        get_config("ci", vp_lr_mult=0)
