"""The run store: never overwrite silently, atomic writes, append-only records read back as tidy frames."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from sigprop.errors import SigpropError
from sigprop.runs import RunDir, atomic_write_json, load_runs, read_jsonl


def make_run(path, block="sas", steps=3, replay=False):
    run = RunDir.open(path)
    run.write_json("config.json", {"block": block, "train": {"steps": steps, "lr": 1e-3}, "spec": {"trainable": ["beta_ff"]}})
    for s in range(1, steps + 1):
        run.append("metrics.jsonl", {"step": s, "loss": 10.0 - s, **({"eval_loss": 9.5 - s} if s == steps else {})})
    run.append("probes.jsonl", [{"step": 0, "source": "probe", "layer": 1, "module": "blocks.0", "metric": "cos_mean", "head": -1, "value": 0.1},
                                {"step": 0, "source": "gain", "layer": 1, "module": "block", "metric": "alpha", "head": 0, "value": 1.0}])
    if replay:  # a crash after step 3 and a resume from a step-2 checkpoint replays step 3
        run.append("metrics.jsonl", {"step": steps, "loss": 42.0})
    run.write_json("summary.json", {"status": "done", "final_eval_loss": 9.5 - steps})
    return run


def test_open_refuses_a_non_empty_dir_and_names_both_flags(tmp_path):
    make_run(tmp_path / "r")
    with pytest.raises(SigpropError) as e:
        RunDir.open(tmp_path / "r")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "r") in msg and "--resume" in msg and "--overwrite" in msg
    assert RunDir.open(tmp_path / "r", resume=True).path == tmp_path / "r"
    with pytest.raises(SigpropError, match="exclude each other"):
        RunDir.open(tmp_path / "r", resume=True, overwrite=True)
    with pytest.raises(SigpropError, match="nothing to resume"):
        RunDir.open(tmp_path / "new", resume=True)
    (tmp_path / "empty").mkdir()
    assert RunDir.open(tmp_path / "empty").path.exists()  # an empty folder is fine


def test_overwrite_removes_only_run_files(tmp_path):
    run = make_run(tmp_path / "r")
    RunDir.open(tmp_path / "r", overwrite=True)
    assert not any((tmp_path / "r").iterdir())
    run = make_run(tmp_path / "r2")
    (run.path / "notes.txt").write_text("mine")
    with pytest.raises(SigpropError, match="did not write.*notes.txt"):
        RunDir.open(run.path, overwrite=True)
    assert (run.path / "notes.txt").read_text() == "mine"


def test_atomic_json_leaves_no_temp_files_and_writes_no_nan(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": (1, 2)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1, 2]}
    assert os.listdir(tmp_path) == ["a.json"]
    plain = tmp_path / "plain"
    plain.write_text("")  # what open() gives under this process's umask; mkstemp alone would give 0600
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    plain.unlink()

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a.json", {"x": Boom()})
    assert json.loads((tmp_path / "a.json").read_text())["y"] == [1, 2]  # old file intact
    assert os.listdir(tmp_path) == ["a.json"]


def test_torn_last_line_is_skipped(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(p) == [{"step": 1}, {"step": 2}]


def test_load_runs_tidy_frames_and_replayed_steps(tmp_path):
    make_run(tmp_path / "a", "sas", replay=True)
    make_run(tmp_path / "b", "pre-ln", steps=4)
    (tmp_path / "not-a-run").mkdir()
    runs = load_runs(str(tmp_path / "*"))
    assert len(runs) == 2 and set(runs.paths) == {"a", "b"}
    m = runs.metrics
    assert list(m.columns[:1]) == ["run"] and set(m["run"]) == {"a", "b"}
    a = m[m.run == "a"]
    assert list(a["step"]) == [1, 2, 3] and a["loss"].iloc[-1] == 42.0  # last record of a replayed step wins
    assert len(m[m.run == "b"]) == 4 and m[m.run == "b"]["block"].iloc[0] == "pre-ln"
    p = runs.probes
    assert set(p["source"]) == {"probe", "gain"} and len(p) == 4
    c = runs.configs.set_index("run")
    assert c.loc["a", "train.steps"] == 3 and c.loc["b", "block"] == "pre-ln" and c.loc["a", "spec.trainable"] == "beta_ff"
    assert runs.summaries.set_index("run").loc["b", "final_eval_loss"] == 5.5
    with pytest.raises(SigpropError, match="no run directories"):
        load_runs(str(tmp_path / "zzz*"))


def test_a_packed_run_reads_the_same_and_unpacks_to_the_same_bytes_on_resume(tmp_path):
    """RunDir.pack gzips the JSON-lines records (what a gallery commits): readers see the same frames, the .gz is
    byte-reproducible, a resume restores the plain files exactly, and --overwrite clears the packed ones too."""
    run = make_run(tmp_path / "r", replay=True)
    before = {n: (run.path / n).read_bytes() for n in ("metrics.jsonl", "probes.jsonl")}
    frames = (run.metrics(), run.probes(), load_runs(tmp_path / "r").metrics)
    assert run.pack() > 0 and run.pack() == 0  # once
    assert not (run.path / "metrics.jsonl").exists() and run.has("metrics.jsonl")
    for a, b in zip(frames, (run.metrics(), run.probes(), load_runs(tmp_path / "r").metrics)):
        pd.testing.assert_frame_equal(a, b)
    gz = (run.path / "probes.jsonl.gz").read_bytes()
    (run.path / "probes.jsonl.gz").rename(run.path / "probes.jsonl.gz.old")
    (run.path / "probes.jsonl").write_bytes(before["probes.jsonl"])
    run.pack()
    assert (run.path / "probes.jsonl.gz").read_bytes() == gz  # no timestamp inside: the same bytes every time
    (run.path / "probes.jsonl.gz.old").unlink()
    RunDir.open(run.path, resume=True)
    assert {n: (run.path / n).read_bytes() for n in before} == before and not list(run.path.glob("*.gz"))
    run.pack()
    RunDir.open(run.path, overwrite=True)
    assert run.contents() == []
