"""`sigprop analyze --model DIR`: pretrained checkpoints (tiny random models saved with save_pretrained, no download)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import sigprop as sp
from sigprop.cli import app
from sigprop.errors import SigpropError

transformers = pytest.importorskip("transformers")
from hf_tiny import tiny_models  # noqa: E402

runner = CliRunner()
ARGS = ["--seq-len", "12", "--batch", "2", "--data", "random"]


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "mistral", "qwen2", "bert", "roberta", "opt"])
def test_cli_analyze_model_folder(family: str, tmp_path) -> None:
    tiny_models()[family]().save_pretrained(tmp_path / family)
    r = runner.invoke(app, ["analyze", "--model", str(tmp_path / family), *ARGS, "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    cos = [row for row in doc["metrics"] if row["metric"] == "cos_mean"]
    assert [row["layer"] for row in cos] == [0, 1, 2]  # the embedding plus one per block
    assert doc["settings"]["depth"] == 2 and doc["settings"]["width"] == 32
    assert doc["verdicts"][family]


def test_revisions_give_one_layer_by_checkpoint_figure(tmp_path) -> None:
    make = tiny_models()["gpt2"]
    for step, scale in (("step0", 1.0), ("step1", 8.0)):
        model = make()
        with torch.no_grad():  # a stand-in for training: larger weights align the tokens more
            for block in model.transformer.h:
                block.attn.c_attn.weight.mul_(scale)
        model.save_pretrained(tmp_path / "ckpt" / step)
    out = tmp_path / "out"
    r = runner.invoke(app, ["analyze", "--model", str(tmp_path / "ckpt"), "--revision", "step0,step1", *ARGS, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "ckpt@step0" in r.output and "ckpt@step1" in r.output
    assert (out / "revisions.png").exists() and (out / "rank_collapse.png").exists()
    a = sp.analyze(model=str(tmp_path / "ckpt"), revisions=["step0", "step1"], seq_len=12, batch=2, data="random", progress=False)
    assert a.blocks == ["ckpt@step0", "ckpt@step1"]
    assert a.measured("ckpt@step0")[0] == pytest.approx(a.measured("ckpt@step1")[0])  # same embedding, same batch
    r = runner.invoke(app, ["analyze", "--model", str(tmp_path / "ckpt"), "--revision", "step9", *ARGS])
    assert isinstance(r.exception, SigpropError) and "step0, step1" in str(r.exception)


def test_code_corpus_through_the_models_tokenizer(tmp_path) -> None:
    from sigprop.data.tokenizer import train_tokenizer

    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(["def f(x):\n    return x + 1\n"] * 20, 300),
                                               eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=64))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    a = sp.analyze(model=str(tmp_path / "m"), seq_len=16, batch=2, progress=False)
    assert "the model's tokenizer" in a.settings["data_desc"]
    assert len(a.measured("m")) == 3


def test_any_module_and_one_line_errors(tmp_path) -> None:
    a = sp.analyze(tiny_models()["llama"](), seq_len=12, batch=2, data="random", progress=False)
    assert a.blocks == ["LlamaForCausalLM"] and len(a.table("LlamaForCausalLM")) == 3
    att = sp.analyze(tiny_models()["llama"](), seq_len=12, batch=2, data="random", progress=False, attention=True)
    ratio = att.attention_table("LlamaForCausalLM").set_index("layer").attn_entropy_ratio  # HF's eager softmax
    assert list(ratio.index) == [1, 2] and ((ratio > 0) & (ratio <= 1 + 1e-9)).all()
    with pytest.raises(SigpropError, match="cannot tell which modules of Linear") as err:
        sp.analyze(nn.Linear(4, 4), seq_len=4, batch=1, data="random", vocab_size=4)
    assert "\n" not in str(err.value)
    r = runner.invoke(app, ["analyze", "--model", str(tmp_path / "nothing-here"), *ARGS])
    assert isinstance(r.exception, SigpropError) and "does not exist" in str(r.exception)
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["analyze", "--model", str(tmp_path / "empty"), *ARGS])
    assert isinstance(r.exception, SigpropError) and "\n" not in str(r.exception)
    with pytest.raises(SigpropError, match="context"):
        sp.analyze(tiny_models()["gpt2"](), seq_len=100, batch=1, data="random")
