"""Run folders are never lost or mixed, and every fault ends in one line: one writer per run (lock),
resume never records a step twice, the divergence guard, torchrun's closing summary, file-system
errors, damaged configs, set-up crashes, and a warm-up longer than the run (issue 11, items 1-6, 9, 10)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sigprop.errors import SigpropError
from sigprop.runs import LOCK, RunLock, atomic_write_bytes
from sigprop.training import TrainingDiverged, get_config, train
from sigprop.training.checkpoint import load_checkpoint
from sigprop.training.guard import Guard, divergence

REPO = Path(__file__).resolve().parents[1]


def ci(block, out, data, **kw):
    return train(block, "ci", out, data=data, quiet=True, **{"probe_every": 0, **kw})


def steps_on_disk(run: Path) -> list[int]:
    """The raw step column of metrics.jsonl (readers dedupe; the file itself must not need it)."""
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def cli_main(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """The real console entry point in-process: (exit code, stderr)."""
    from sigprop.cli import main

    monkeypatch.setattr(sys, "argv", ["sigprop", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


class Crash(Exception):
    """Stands in for kill -9: the process stops mid-run without checkpointing."""


# ------------------------------------------------------------------------------------------------ 1. lock


def test_a_second_writer_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path, data):
    out = tmp_path / "r"
    with RunLock(out):
        with pytest.raises(SigpropError) as e:
            ci("pre-ln", out, data, steps=2)
    msg = str(e.value)
    assert f"is in use by process {os.getpid()}" in msg and "\n" not in msg
    assert not (out / "config.json").exists()  # the refused run wrote nothing
    (out / LOCK).write_text(json.dumps({"pid": 2**22 + 12345, "host": "gone", "command": "sigprop train", "since": "x"}))
    run = ci("pre-ln", out, data, steps=2)  # a lock nobody holds (its process died) is taken over
    assert run.status == "done" and steps_on_disk(out) == [1, 2] and not (out / LOCK).exists()


@pytest.mark.slow
def test_cli_two_trains_into_one_folder(tmp_path, cache, data):
    """The issue's repro: a second `sigprop train` into a running run's --out exits 2 naming the first."""
    out = tmp_path / "x"
    env = {**os.environ, "SIGPROP_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "sigprop", "train", "--scale", "ci", "--out", str(out), "-q", "--probe-every", "0"]
    first = subprocess.Popen([*cmd, "--block", "sas", "--steps", "100000"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size):
            time.sleep(0.2)
        second = subprocess.run([*cmd, "--block", "pre-ln", "--steps", "3", "--overwrite"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"is in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert json.loads((out / "config.json").read_text())["block"] == "sas"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    steps = steps_on_disk(out)
    assert steps == list(range(1, len(steps) + 1))  # one writer: no interleaved curve


def test_compare_shares_the_lock(tmp_path, cache, data):
    from sigprop.training.compare import compare

    with RunLock(tmp_path / "cmp" / "sas"), pytest.raises(SigpropError, match=f"in use by process {os.getpid()}"):
        compare(["sas"], "ci", tmp_path / "cmp", quiet=True, cache_dir=cache, steps=2, probe_every=0)


# ------------------------------------------------------------------------------------------------ 2. resume


def test_resume_after_a_crash_replays_without_recording_a_step_twice(tmp_path, data):
    straight = ci("sas-p", tmp_path / "a", data, steps=10, ckpt_every=3, probe_every=2)

    def crash(step, rec):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        ci("sas-p", tmp_path / "b", data, steps=10, ckpt_every=3, probe_every=2, callback=crash)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 6 and steps_on_disk(tmp_path / "b")[-1] == 8
    resumed = train(None, None, tmp_path / "b", resume=True, data=data, quiet=True)
    assert steps_on_disk(tmp_path / "b") == list(range(1, 11))
    assert resumed.metrics()["loss"].tolist() == straight.metrics()["loss"].tolist()
    pa, pb = straight.probes(), resumed.probes()
    assert len(pb) == len(pa) and pb["value"].tolist() == pa["value"].tolist()


def test_resume_without_a_checkpoint_says_so_and_starts_clean(tmp_path, data, capsys):
    def crash(step, rec):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):  # killed before its first checkpoint
        ci("pre-ln", tmp_path / "r", data, steps=6, ckpt_every=5, probe_every=3, callback=crash)
    capsys.readouterr()
    run = ci("pre-ln", tmp_path / "r", data, steps=6, ckpt_every=5, probe_every=3, resume=True)
    assert "has no checkpoint" in capsys.readouterr().err
    assert run.status == "done" and steps_on_disk(tmp_path / "r") == [1, 2, 3, 4, 5, 6]
    probe_steps = [json.loads(line)["step"] for line in (tmp_path / "r" / "probes.jsonl").read_text().splitlines()]
    assert len(probe_steps) == len(run.probes())  # step-0 probes taken once, not once per start


# ------------------------------------------------------------------------------------------------ 3. divergence


def test_divergence_rule():
    healthy = [6.0, 5.5, 5.2, 5.0, 4.9]
    assert divergence(5.1, 1.0, healthy, [1.0] * 5, 3.0, 100.0) is None
    assert "diverge_loss_ratio" in divergence(16.0, 1.0, healthy, [1.0] * 5, 3.0, 100.0)
    assert "diverge_grad_ratio" in divergence(5.0, 150.0, healthy, [1.0] * 5, 3.0, 100.0)
    assert divergence(16.0, 150.0, healthy, [1.0] * 5, 0, 0) is None  # both tests off
    assert "loss is nan" in divergence(float("nan"), 1.0, [], [], 0, 0)
    g = Guard(3.0, 100.0, window=4)
    for loss in (6.0, 5.0, 4.0, 3.0, 2.0):
        assert g.check(loss, 1.0) is None
    assert list(g.losses) == [5.0, 4.0, 3.0, 2.0] and g.check(11.0, 1.0) is not None and len(g.losses) == 4


def test_a_blow_up_stops_with_the_checkpoint_from_before_it(tmp_path, data):
    """Weights scaled up after step 12 give a huge but finite loss at step 13: the guard stops the run and the
    due step-12 checkpoint (the blown-up weights) is never written; step 8's is kept."""
    holder = {}
    orig = torch.optim.AdamW.__init__

    def capture(self, groups, *a, **k):
        orig(self, groups, *a, **k)
        holder["params"] = [p for g in self.param_groups for p in g["params"]]

    def blow_up(step, rec):
        if step == 12:
            with torch.no_grad():
                for p in holder["params"]:
                    if p.ndim == 2:
                        p.mul_(100.0)

    torch.optim.AdamW.__init__ = capture
    try:
        with pytest.raises(TrainingDiverged) as e:
            ci("pre-ln", tmp_path / "r", data, steps=20, ckpt_every=4, lr=1e-3, callback=blow_up)
    finally:
        torch.optim.AdamW.__init__ = orig
    msg = str(e.value)
    assert "at step 13" in msg and "diverge_loss_ratio" in msg and "last.pt (step 8)" in msg and "\n" not in msg
    losses = [json.loads(line)["loss"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and max(losses) < 7  # the blown-up step is not recorded as training
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"] == 8
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "diverged"


def test_guard_thresholds_are_runtime_settings():
    from sigprop.training.config import RUNTIME_FIELDS

    assert {"diverge_loss_ratio", "diverge_grad_ratio", "diverge_window"} <= set(RUNTIME_FIELDS)
    with pytest.raises(SigpropError, match="diverge_loss_ratio must be 0 \\(off\\) or above 1"):
        get_config("ci", diverge_loss_ratio=0.5)


def test_cli_sets_the_guard(tmp_path, cache, data, monkeypatch):
    from typer.testing import CliRunner

    from sigprop.cli import app

    monkeypatch.setenv("SIGPROP_CACHE", str(cache))
    r = CliRunner().invoke(app, ["train", "--scale", "ci", "--steps", "2", "--probe-every", "0", "--out", str(tmp_path / "g"), "-q",
                                 "--diverge-loss-ratio", "0", "--diverge-window", "7"])
    assert r.exit_code == 0, r.output
    train_cfg = json.loads((tmp_path / "g" / "config.json").read_text())["train"]
    assert train_cfg["diverge_loss_ratio"] == 0 and train_cfg["diverge_window"] == 7


# ------------------------------------------------------------------------------------------------ 4. torchrun CLI


@pytest.mark.slow
def test_cli_under_torchrun_exits_0_with_one_summary(tmp_path, cache, data):
    env = {**os.environ, "SIGPROP_CACHE": str(cache), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sigprop",
                        "train", "--block", "sas-p", "--scale", "ci", "--steps", "4", "--eval-every", "2", "--probe-every", "2",
                        "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("sas-p: 4 steps, eval loss") == 1 and "Traceback" not in r.stderr
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


# ------------------------------------------------------------------------------------------------ 5, 6. one-line errors


def test_out_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys, cache):
    monkeypatch.setenv("SIGPROP_CACHE", str(cache))
    f = tmp_path / "file"
    f.write_text("x")
    for cmd in (["train", "--scale", "ci", "--out", str(f), "-q"],
                ["analyze", "--depth", "2", "--width", "32", "--heads", "2", "--data", "random", "--out", str(f)]):
        code, err = cli_main(cmd, monkeypatch, capsys)
        assert code == 2 and "is a file" in err and "Traceback" not in err and err.count("\n") == 1, err


def full(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_one_line(tmp_path, monkeypatch, capsys, cache, data):
    monkeypatch.setenv("SIGPROP_CACHE", str(cache))
    monkeypatch.setattr("sigprop.runs.os.fsync", full)
    code, err = cli_main(["train", "--scale", "ci", "--out", str(tmp_path / "r"), "-q"], monkeypatch, capsys)
    assert code == 2 and "No space left on device" in err and "config.json" in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_analyze_checks_its_output_folder_before_computing(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("sigprop.cli.analyze.analyze", lambda *a, **k: pytest.fail("computed before checking --out"))
    code, err = cli_main(["analyze", "--depth", "2", "--width", "32", "--heads", "2", "--data", "random",
                          "--out", str(tmp_path / "file" / "sub")], monkeypatch, capsys)
    assert code == 2 and "file system error" in err and "file/sub" in err and err.count("\n") == 1, err


def test_a_failed_checkpoint_write_leaves_the_old_one(tmp_path, monkeypatch, data):
    out = tmp_path / "r"
    ci("pre-ln", out, data, steps=4, ckpt_every=2, callback=lambda s, r: os.kill(os.getpid(), signal.SIGINT) if s == 2 else None)
    before = (out / "checkpoints" / "last.pt").read_bytes()

    def checkpoint_on_a_full_disk(path, blob):
        with monkeypatch.context() as m:
            m.setattr("sigprop.runs.os.fsync", full)
            atomic_write_bytes(path, blob)

    monkeypatch.setattr("sigprop.training.checkpoint.atomic_write_bytes", checkpoint_on_a_full_disk)
    with pytest.raises(OSError, match="No space left on device: '.*last.pt'"):
        train(None, None, out, resume=True, data=data, quiet=True)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before and not list(out.glob("**/.*.tmp"))


def test_malformed_config_on_resume_is_one_line(tmp_path, data):
    ci("pre-ln", tmp_path / "r", data, steps=2)
    for bad in ({}, {"spec": {"name": "x"}, "train": {"nope": 1}}, {"spec": {"alpha_sa": -1}, "train": {}}):
        (tmp_path / "r" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(SigpropError, match="config.json") as e:
            train(None, None, tmp_path / "r", resume=True, data=data, quiet=True)
        assert "--overwrite" in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ 9, 10.


def test_a_start_that_crashed_before_its_first_step_does_not_block_the_folder(tmp_path, data, monkeypatch):
    def fail(self, *a, **k):
        raise RuntimeError("out of memory")

    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", fail)
        with pytest.raises(RuntimeError):
            ci("pre-ln", tmp_path / "r", data, steps=3, probe_every=2)
    assert (tmp_path / "r" / "config.json").exists()
    run = ci("sas", tmp_path / "r", data, steps=3)  # the corrected command, without --overwrite
    assert run.status == "done" and json.loads((tmp_path / "r" / "config.json").read_text())["block"] == "sas"
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(SigpropError, match="not empty"):
        ci("sas", tmp_path / "r", data, steps=3)


def test_warmup_longer_than_the_run_is_refused():
    with pytest.raises(SigpropError, match="warmup of 5000 steps is longer than the run's 3 steps"):
        get_config("ci", warmup=5000, steps=3)
    assert get_config("ci", warmup=3, steps=3).warmup_steps == 3 and get_config("ci", warmup=0.5, steps=3).steps == 3
