"""Data parallelism on CPU: 2 gloo processes with the same global batch give the 1-process loss curve."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sigprop.training import SCALES, train

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from sigprop.data import load_data

    c = SCALES["ci"]
    data = load_data("code", vocab_size=c.vocab_size, seq_len=c.seq_len, cache_dir=cache, progress=False, max_bytes=c.max_bytes)
    train("sas-p", "ci", out, data=data, quiet=True, steps=STEPS, probe_every=3, eval_every=3, device="cpu")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path_factory, tmp_path):
    from sigprop.data import load_data

    cache = tmp_path_factory.getbasetemp() / "sigprop-cache"
    c = SCALES["ci"]
    data = load_data("code", vocab_size=c.vocab_size, seq_len=c.seq_len, cache_dir=cache, progress=False, max_bytes=c.max_bytes)
    one = train("sas-p", "ci", tmp_path / "one", data=data, quiet=True, steps=STEPS, probe_every=3, eval_every=3)

    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "two"), str(cache)), nprocs=2, join=True, start_method="spawn")

    two = one.metrics().__class__([json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()])
    a = one.metrics()
    assert list(two["step"]) == list(range(1, STEPS + 1))  # rank 0 alone wrote each step once
    assert two["loss"].tolist() == pytest.approx(a["loss"].tolist(), rel=2e-5)
    assert two["grad_norm"].tolist() == pytest.approx(a["grad_norm"].tolist(), rel=1e-4)
    assert two["eval_loss"].dropna().tolist() == pytest.approx(a["eval_loss"].dropna().tolist(), rel=2e-5)
    assert two["tokens"].iloc[-1] == a["tokens"].iloc[-1]  # the same global batch
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "done"
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["world_size"] == 2
