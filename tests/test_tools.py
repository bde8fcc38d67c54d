"""Issue 29, "into the tools researchers already use": models through huggingface_hub's save_pretrained /
from_pretrained, kept checkpoints and `analyze --run`, TensorBoard and W&B logging, submitit launchers (the local
executor: real subprocesses), the extras of a clean install, and docs/tools.md's commands against the real CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import typer

from sigprop.studies.analysis import analyze
from sigprop.blocks import Transformer, build_model
from sigprop.errors import SigpropError
from sigprop.recipes.base import run_id
from sigprop.runs import RunDir
from sigprop.training import get_config, train
from sigprop.training.checkpoint import keep_steps
from sigprop.training.loggers import parse_log, probe_scalars
from sigprop.training.resolve import stored_run

REPO = Path(__file__).resolve().parents[1]


def _cli(args, cache, cwd=REPO, timeout=300, **env):
    """`python -m sigprop ...` in a subprocess that imports this checkout (submitit's jobs inherit PYTHONPATH)."""
    full = {**os.environ, "SIGPROP_CACHE": str(cache), "COLUMNS": "200", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "sigprop", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------ save_pretrained


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path, kind):
    model = build_model("sas-p", depth=2, width=32, heads=2, vocab_size=97, context=16, kind=kind, seed=3,
                        sets=["beta_ff=0.3", "trainable=alpha_comb,beta_sa"])
    with torch.no_grad():  # move every weight off its init, so a load that kept the init would show
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["spec"]["beta_ff"] == 0.3 and cfg["cfg"]["kind"] == kind and cfg["cfg"]["vocab_size"] == 97
    back = Transformer.from_pretrained(tmp_path / "m")
    assert back.spec == model.spec and back.config == model.config
    idx = torch.randint(0, 97, (2, 16))
    model.eval()
    assert torch.equal(model(idx)[0], back(idx)[0])


def test_from_pretrained_refuses_weights_of_another_model(tmp_path):
    build_model("pre-ln", depth=2, width=32, heads=2, vocab_size=50, context=8).save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["cfg"]["depth"] = 3  # the config now asks for a block the weights do not have
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="Missing key"):
        Transformer.from_pretrained(tmp_path / "m")


# ------------------------------------------------------------------------------------------------ kept checkpoints


def test_keep_steps_are_evenly_spaced_from_init_to_the_end():
    assert keep_steps(20, 0) == []
    assert keep_steps(20, 1) == [20]
    assert keep_steps(20, 3) == [0, 10, 20]
    assert keep_steps(100, 5) == [0, 25, 50, 75, 100]
    assert keep_steps(3, 10) == [0, 1, 2, 3]


def test_keep_checkpoints_is_a_runtime_field_run_ids_unchanged():
    from sigprop.blocks import get_spec

    cfg = get_config("ci")
    assert run_id(get_spec("sas"), cfg) == run_id(get_spec("sas"), cfg.replace(keep_checkpoints=5))
    with pytest.raises(SigpropError, match="keep_checkpoints must be an integer >= 0"):
        get_config("ci", keep_checkpoints=-1)


def test_kept_checkpoints_and_analyze_run_match_the_runs_own_probes(tmp_path, data, cache):
    out = tmp_path / "run"
    train("sas", "ci", out, data=data, quiet=True, keep_checkpoints=3)
    rd = RunDir(out)
    assert list(rd.kept()) == [0, 10, 20]
    spec, cfg = stored_run(rd.read_json("config.json"))
    assert cfg.keep_checkpoints == 3
    # every snapshot opens as a hub model; the last one holds the final weights
    final = Transformer.from_pretrained(rd.kept()[20])
    ck = torch.load(rd.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(final.state_dict()[k], v) for k, v in ck.items())

    a = analyze(run=out, all_checkpoints=True, batch=cfg.probe_batch, progress=False, cache_dir=str(cache))
    assert a.blocks == ["run@step0", "run@step10", "run@step20"]
    probes = rd.probes()
    for step in (0, 10, 20):  # the same rows, the same weights: the training probes' numbers
        want = probes[(probes.step == step) & (probes.source == "probe") & (probes.metric == "cos_mean") & (probes["head"] == -1)]
        got = a.measured(f"run@step{step}", "cos_mean")
        assert got == pytest.approx(want.sort_values("layer").value.to_numpy(), abs=1e-6)
    assert not torch.equal(torch.tensor(a.measured("run@step0")), torch.tensor(a.measured("run@step20")))
    paths = a.save(tmp_path / "an")
    assert (tmp_path / "an" / "revisions.png") in paths
    last = analyze(run=out, batch=cfg.probe_batch, progress=False, cache_dir=str(cache))  # the final checkpoint only
    assert last.blocks == ["run@step20"] and last.measured("run@step20") == pytest.approx(a.measured("run@step20"))
    att = analyze(run=out, all_checkpoints=True, batch=cfg.probe_batch, progress=False, cache_dir=str(cache), attention=True)
    ent = {s: att.attention_table(f"run@step{s}").attn_entropy_ratio.to_numpy() for s in (0, 20)}
    assert ent[0] == pytest.approx(1.0, abs=1e-6) and (ent[20] < 1 - 1e-6).all()  # W^Q = 0 at init; training moves it


def test_resume_rewrites_kept_snapshots_past_the_checkpoint_and_overwrite_clears_them(tmp_path, data):
    out = tmp_path / "run"

    def stop_at_15(step, rec):
        if step == 15:
            os.kill(os.getpid(), __import__("signal").SIGINT)

    r = train("pre-ln", "ci", out, data=data, quiet=True, keep_checkpoints=5, callback=stop_at_15)
    assert r.status == "interrupted" and list(RunDir(out).kept()) == [0, 5, 10, 15]
    train(None, None, out, data=data, quiet=True, resume=True)  # checkpoint at step 15 (the stop): nothing dropped
    assert list(RunDir(out).kept()) == [0, 5, 10, 15, 20]
    whole = tmp_path / "whole"
    train("pre-ln", "ci", whole, data=data, quiet=True, keep_checkpoints=5)
    a, b = Transformer.from_pretrained(RunDir(out).kept()[20]), Transformer.from_pretrained(RunDir(whole).kept()[20])
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())  # bit for bit, as the run
    RunDir(out).drop_kept(after=10)
    assert list(RunDir(out).kept()) == [0, 5, 10]
    train("pre-ln", "ci", out, data=data, quiet=True, overwrite=True)
    assert RunDir(out).kept() == {}


def test_analyze_run_errors_are_one_line(tmp_path, data, cache):
    with pytest.raises(SigpropError, match="not a training run"):
        analyze(run=tmp_path, progress=False)
    out = tmp_path / "run"
    train("pre-ln", "ci", out, data=data, quiet=True, steps=2)
    with pytest.raises(SigpropError, match="kept no snapshots; train it with --keep-checkpoints"):
        analyze(run=out, all_checkpoints=True, progress=False, cache_dir=str(cache))
    with pytest.raises(SigpropError, match="needs run="):
        analyze("sas", all_checkpoints=True, progress=False)


# ------------------------------------------------------------------------------------------------ trackers


def test_probe_rows_become_tags_per_metric_and_layer():
    import pandas as pd

    rows = pd.DataFrame([
        {"source": "probe", "layer": 3, "module": "blocks.2.hook_resid_post", "metric": "cos_mean", "head": -1, "value": 0.5},
        {"source": "gain", "layer": 1, "module": "block", "metric": "alpha", "head": 1, "value": 2.0},
        {"source": "update", "layer": 1, "module": "blocks.0.attn.W_Q", "metric": "update_ratio", "head": -1, "value": 0.1},
        {"source": "update", "layer": 1, "module": "blocks.0.attn.W_K", "metric": "update_ratio", "head": -1, "value": 0.2},
        {"source": "probe", "layer": 0, "module": "blocks.0.hook_resid_pre", "metric": "cos_mean", "head": -1, "value": float("nan")},
    ])
    assert probe_scalars(rows) == {"probe/cos_mean/layer_3": 0.5, "gain/alpha/layer_1/head_1": 2.0,
                                   "update/update_ratio/layer_1/attn.W_Q": 0.1, "update/update_ratio/layer_1/attn.W_K": 0.2}


def test_bad_or_missing_logger_is_one_line(monkeypatch):
    with pytest.raises(SigpropError, match="unknown logger 'foo'; accepted: none, tensorboard, wandb"):
        parse_log("foo")
    assert parse_log("none") == [] and parse_log(None) == []
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(SigpropError, match=r"--log tensorboard needs the tensorboard package: pip install 'sigprop\[log\]'"):
        parse_log("tensorboard")


def test_cli_log_foo_is_one_line(tmp_path, cache, data):
    r = _cli(["train", "--scale", "ci", "--out", str(tmp_path / "x"), "--log", "foo"], cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: unknown logger 'foo'; accepted: none, tensorboard, wandb"
    assert not (tmp_path / "x").exists()  # refused before anything was made


def test_cli_log_tensorboard_event_files_hold_the_losses(tmp_path, cache, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    r = _cli(["train", "--block", "sas", "--scale", "ci", "--out", str(out), "--log", "tensorboard", "--quiet"], cache)
    assert r.returncode == 0, r.stderr
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    metrics = RunDir(out).metrics()
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(loss) == list(range(1, 21))
    assert [loss[s] for s in metrics.step] == pytest.approx(metrics.loss.tolist(), rel=1e-6)
    ev = {e.step: e.value for e in acc.Scalars("eval/loss")}
    assert sorted(ev) == [10, 20] and ev[20] == pytest.approx(metrics.eval_loss.iloc[-1], rel=1e-6)
    assert {"train/lr", "train/tokens_per_s", "train/grad_norm", "probe/cos_mean/layer_2", "gain/alpha/layer_1/head_0"} <= set(tags), tags
    probes = RunDir(out).probes()
    want = probes[(probes.step == 20) & (probes.metric == "cos_mean") & (probes.layer == 2) & (probes.source == "probe")].value.item()
    assert {e.step: e.value for e in acc.Scalars("probe/cos_mean/layer_2")}[20] == pytest.approx(want, rel=1e-6)
    r = _cli(["train", "--block", "sas", "--scale", "ci", "--out", str(out), "--overwrite", "--quiet", "--steps", "2"], cache)
    assert r.returncode == 0, r.stderr
    assert not (out / "tensorboard").exists()  # --overwrite replaces the tracker's view with the records


def test_tensorboard_after_a_crash_and_resume_holds_each_step_once(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"

    def crash_at_15(step, rec):
        if step == 15:
            raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):  # checkpoint at step 10; steps 11-15 logged, then replayed
        train("pre-ln", "ci", out, data=data, quiet=True, log="tensorboard", callback=crash_at_15)
    train(None, None, out, data=data, quiet=True, resume=True, log="tensorboard")
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, 21))
    whole = RunDir(out).metrics()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(whole.loss.tolist(), rel=1e-6)


def test_log_wandb_offline_writes_a_run_folder(tmp_path, data, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    train("pre-ln", "ci", out, data=data, quiet=True, steps=4, probe_every=2, log="wandb")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((out / "wandb").iterdir())


# ------------------------------------------------------------------------------------------------ launchers


def test_reproduce_through_submitit_local_executor_then_replot(tmp_path, cache, data):
    pytest.importorskip("submitit")
    out = tmp_path / "fig13"
    r = _cli(["reproduce", "fig13", "--scale", "ci", "--out", str(out), "--launcher", "slurm", "--partition", "gpu",
              "--time", "30", "--gpus", "1", "--mem", "8", "--dry-run"], cache)
    assert r.returncode == 0, r.stderr
    assert "would submit 2 job(s) to slurm (partition gpu, 30 min, 1 CPU(s), 1 GPU(s), 8 GB per job)" in r.stdout
    assert not (out / "runs").exists()
    r = _cli(["reproduce", "fig13", "--scale", "ci", "--out", str(out), "--launcher", "local-submitit", "--only", "sas-s0"], cache)
    assert r.returncode == 0, r.stderr
    assert "submitted 1 job(s) to local-submitit" in r.stderr and "job 1/1 done" in r.stderr
    assert list((out / "submitit").glob("*_0_log.out"))  # a real submitit job ran
    r = _cli(["reproduce", "fig13", "--scale", "ci", "--out", str(out), "--launcher", "local-submitit", "--dry-run"], cache)
    assert "would submit 1 job(s)" in r.stdout and "sas-vskipinit-attn-s0" in r.stdout  # the finished run is not resubmitted
    r = _cli(["reproduce", "fig13", "--scale", "ci", "--out", str(out), "--launcher", "local-submitit"], cache)
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "result.json").read_text())
    assert len(result["trained"]) == 1 and len(result["reused"]) == 1 and (out / "fig13.png").exists()
    for run in (out / "runs").iterdir():
        assert RunDir(run).summary()["status"] == "done" and not (run / ".lock").exists()
    (out / "fig13.png").unlink()
    r = _cli(["reproduce", "fig13", "--scale", "ci", "--out", str(out), "--replot"], cache)
    assert r.returncode == 0, r.stderr
    assert (out / "fig13.png").exists()


def test_a_job_on_a_locked_run_fails_with_the_holder_named(tmp_path, cache, data):
    pytest.importorskip("submitit")
    from sigprop.training.cluster import Launcher, run_jobs
    from sigprop.recipes.executor import layout, train_job
    from sigprop.runs import RunLock

    lay = layout("fig13", "ci", tmp_path / "f")
    path = lay.runs_dir / lay.folders[0]
    with RunLock(path):
        with pytest.raises(SigpropError, match=r"1 of 1 job\(s\) failed: .*is in use by process"):
            run_jobs(Launcher("local-submitit"), train_job, [(lay.plans[0], lay.cfgs[0], path, str(cache), 1)], ["x"],
                     tmp_path / "logs", "t", say=lambda s: None, poll_s=0.5)
    assert not (path / "config.json").exists()


def test_sweep_through_submitit_local_executor(tmp_path, cache):
    pytest.importorskip("submitit")
    args = ["sweep", "--block", "sas", "--width", "16,32", "--depth", "2", "--seeds", "1", "--heads", "2", "--seq-len", "16",
            "--data", "random", "--vocab-size", "64", "--out", str(tmp_path / "sw")]
    r = _cli([*args, "--launcher", "slurm", "--dry-run"], cache)
    assert r.returncode == 0 and "would submit 2 job(s) to slurm" in r.stdout, r.stdout + r.stderr
    r = _cli([*args, "--launcher", "local-submitit"], cache)
    assert r.returncode == 0, r.stderr
    assert "submitted 2 job(s) to local-submitit" in r.stderr and (tmp_path / "sw" / "sweep.csv").exists()
    local = _cli([*args[:-1], str(tmp_path / "local"), "--workers", "1"], cache)
    assert local.returncode == 0, local.stderr
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "sw" / "sweep.csv"), pd.read_csv(tmp_path / "local" / "sweep.csv")
    pd.testing.assert_frame_equal(a, b)  # a job computes a point exactly as a local worker does


def test_launcher_errors_are_one_line():
    from sigprop.training.cluster import Launcher

    with pytest.raises(SigpropError, match="unknown launcher 'pbs'; accepted: local, slurm, local-submitit"):
        Launcher("pbs")
    with pytest.raises(SigpropError, match="--time"):
        Launcher("slurm", time=0)


# ------------------------------------------------------------------------------------------------ install, docs


def test_extras_are_named_for_what_they_enable_and_dev_has_them_all():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in meta["dependencies"] if d.startswith("torch"))
    assert torch_req == "torch>=2.2"  # no upper pin: the CPU wheel is pinned by the Makefile, not the package
    extras = meta["optional-dependencies"]
    names = lambda reqs: {re.split(r"[<>=\[ ]", r)[0] for r in reqs}  # noqa: E731
    assert names(extras["hf"]) == {"transformers", "datasets"}
    assert names(extras["log"]) == {"tensorboard", "wandb"}
    assert names(extras["cluster"]) == {"submitit"}
    assert names(extras["gpu"]) == {"triton"}  # attn_impl='fused'; in dev so that its kernels are tested (interpreter)
    assert "sigprop[hf,log,cluster,gpu]" in extras["dev"] and {"pytest", "hypothesis", "nbclient", "nbformat", "ipykernel", "ipywidgets"} <= names(extras["dev"])
    assert "torch==2.13.0" in (REPO / "Makefile").read_text() and '-e ".[dev]"' in (REPO / "Makefile").read_text()


def test_analyze_model_without_transformers_names_the_hf_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(SigpropError, match=r"needs transformers: pip install 'sigprop\[hf\]'"):
        analyze(model="some/model", progress=False)


def _doc_commands() -> list[str]:
    text = (REPO / "docs" / "tools.md").read_text()
    lines = [ln for b in re.findall(r"```bash\n(.*?)```", text, re.S) for ln in b.splitlines()]
    out = []
    for ln in lines:
        ln = ln.split(" #", 1)[0].strip()
        ln = re.sub(r"^(\w+=\S+ )+", "", ln)  # WANDB_MODE=offline sigprop ...
        if ln.startswith("torchrun"):
            ln = "sigprop " + ln.split("-m sigprop", 1)[1].strip()
        if ln.startswith("sigprop "):
            out.append(ln)
    return out


def test_docs_tools_commands_parse_against_the_cli():
    from sigprop.cli import app

    cmds = _doc_commands()
    features = ("--keep-checkpoints", "--all-checkpoints", "--log tensorboard", "--log wandb", "--launcher slurm", "torchrun")
    text = (REPO / "docs" / "tools.md").read_text()
    assert all(f in text for f in features) and len(cmds) >= 8
    for line in cmds:
        cmd, args = typer.main.get_command(app), shlex.split(line)[1:]
        while hasattr(cmd, "commands"):
            cmd, args = cmd.commands[args[0]], args[1:]
        cmd.make_context(cmd.name, args)  # raises on an unknown option or a bad value
