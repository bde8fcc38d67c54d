"""Bad knob values, token ids and kernels are one-line SigpropErrors naming the value and what is accepted
(issue 11, items 7, 8), never a traceback from deep inside torch."""

from __future__ import annotations

import pytest
import torch

import sigprop as sp
from sigprop.blocks import BlockSpec, ModelConfig, build_model, get_spec
from sigprop.errors import SigpropError
from sigprop.studies.theory import propagate


@pytest.mark.parametrize("sets, match", [
    (["alpha=nan"], r"knob alpha must be a finite number >= 0; got nan"),
    (["query_init=inf"], r"knob query_init must be a finite number >= 0, or None \(init_std\); got inf"),
    (["beta_ff=-1"], r"knob beta_ff must be a finite number >= 0, or None"),
    (["leaky_slope=2"], r"knob leaky_slope must be a finite number >= 0 and <= 1; got 2.0"),
    (["norm_eps=0"], r"knob norm_eps must be a finite number > 0; got 0.0"),
    (["parallel=maybe"], r"bad value 'maybe' for knob 'parallel'; expected true/false"),
])
def test_bad_knob_values_name_the_accepted_range(sets, match):
    with pytest.raises(SigpropError, match=match):
        get_spec("sas", sets)


def test_knob_types_are_checked_in_the_spec_itself():
    with pytest.raises(SigpropError, match="knob beta_ff must be a finite number >= 0, or None .*; got 'abc'"):
        get_spec("sas").replace(beta_ff="abc")
    with pytest.raises(SigpropError, match="knob parallel must be true or false, got 1"):
        BlockSpec(parallel=1)
    with pytest.raises(SigpropError, match="knob trainable must be a tuple of gain names"):
        BlockSpec(trainable="beta_ff")
    with pytest.raises(SigpropError, match="unknown block None; accepted: pre-ln"):
        sp.get_spec(None)
    assert get_spec("sas", ["beta_ff=0", "query_init=none"]).beta_ff == 0  # the edges of the ranges are accepted


@pytest.fixture(scope="module")
def model():
    return build_model("pre-ln", ModelConfig(depth=1, width=16, heads=2, vocab_size=50, context=8), seed=0)


@pytest.mark.parametrize("idx, match", [
    (torch.tensor([[1, 2, 50]]), r"idx holds token ids in \[1, 50\]; accepted: 0 .. 49"),
    (torch.tensor([[-1, 2]]), r"idx holds token ids in \[-1, 2\]"),
    (torch.rand(2, 4), r"idx must be integer token ids of shape \(batch, seq_len\), got torch.float32 of shape \(2, 4\)"),
    (torch.tensor([1, 2, 3]), r"got torch.int64 of shape \(3,\)"),
])
def test_model_refuses_bad_token_ids(model, idx, match):
    with pytest.raises(SigpropError, match=match):
        model(idx)


def test_model_refuses_mismatched_targets(model):
    idx = torch.tensor([[1, 2, 3]])
    with pytest.raises(SigpropError, match="targets must be integer token ids shaped like idx"):
        model(idx, idx.float())
    assert model(idx, idx)[1].isfinite()


@pytest.mark.parametrize("sigma0, match", [
    (torch.ones(3, 4), r"sigma0 must be a float kernel of shape \(T, T\) or \(B, T, T\), got \(3, 4\)"),
    (torch.full((3, 3), float("nan")), "sigma0 holds NaN or inf"),
    (torch.eye(3, dtype=torch.long), r"got \(3, 3\)"),
    ([[1.0]], "got list"),
])
def test_propagate_refuses_bad_kernels(sigma0, match):
    with pytest.raises(SigpropError, match=match):
        propagate(get_spec("sas"), ModelConfig(depth=2, width=16, heads=2), sigma0)


def test_propagate_has_a_short_repr():
    r = propagate(get_spec("sas"), ModelConfig(depth=2, width=16, heads=2, context=8), torch.eye(8))
    text = repr(r)
    assert text.startswith("TheoryResult(sas, 3 kernels of 1x8x8") and "exact" in text and "tensor" not in text and len(text) < 200


def test_blocks_counts_parameters_exactly_without_building_the_model():
    from sigprop.blocks import PRESETS
    from sigprop.cli.blocks import count_params

    for depth in (1, 2, 5):
        cfg = ModelConfig(depth=depth, width=32, heads=2, vocab_size=100, context=16)
        for spec in PRESETS.values():
            model = build_model(spec, cfg)
            assert count_params(spec, cfg) == (model.num_params(), sum(p.numel() for p in model.blocks[-1].parameters() if p.requires_grad))


@pytest.mark.parametrize("args, needle", [
    (["analyze", "--block", "sas", "--seq-len", "100000"], "seq_len 100000 with batch 8, depth 18, width 768, 12 heads needs about"),
    (["analyze", "--vocab-size", "0", "--data", "random"], "vocab_size must be positive, got 0"),
    (["train", "--scale", "ci", "--out", ""], "--out '' names no folder; accepted: a folder path"),
    (["compare", "--scale", "ci", "--out", " "], "--out ' ' names no folder"),
    (["analyze", "--out", ""], "--out '' names no folder"),
])
def test_cli_input_that_used_to_crash_or_misplace_is_one_line(args, needle, tmp_path, monkeypatch, capsys):
    """Issue 26: an 80 GB allocation, a torch traceback, and a run trained into the current folder, now one line each."""
    from sigprop.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["sigprop", *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in " ".join(err.split()) and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written where the command ran


def test_analyze_refuses_what_the_memory_left_cannot_hold(monkeypatch):
    """The estimate follows the T x T kernels (T^2), and a refusal names the longest sequence that fits."""
    import sigprop.perf.memory as memory

    small = memory.probe_bytes(4, 64, 2, 512, 4, 100)
    assert memory.probe_bytes(4, 64, 2, 1024, 4, 100) > 3.9 * small  # twice the tokens: four times the kernels
    monkeypatch.setattr(memory, "available_bytes", lambda: 4 * small)
    with pytest.raises(SigpropError, match=r"seq_len 2048 .* accepted: seq_len up to about (10[0-9][0-9]) at this batch") as e:
        sp.analyze("sas", depth=4, width=64, heads=2, seq_len=2048, batch=4, data="random", vocab_size=100, progress=False)
    fits = int(str(e.value).split("up to about ")[1].split()[0])
    assert memory.probe_bytes(4, 64, 2, fits, 4, 100) <= 4 * small < memory.probe_bytes(4, 64, 2, fits + 1, 4, 100)
    a = sp.analyze("sas", depth=2, width=32, heads=2, seq_len=16, batch=2, data="random", vocab_size=100, progress=False)
    assert a.verdicts["sas"].startswith("no rank collapse")  # what fits still runs
