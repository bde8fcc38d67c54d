"""analyze on models that are not Hugging Face language models (issue 31 item 3): the vocabulary from wherever the
model keeps it, a ready batch for models that take no token ids, and one line when neither applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sigprop as sp
from sigprop.errors import SigpropError


class TinyLM(nn.Module):
    """A language model whose vocabulary shows only in its nn.Embedding (no config), with a TransformerLens-like cfg."""

    def __init__(self, vocab: int = 37, width: int = 32, cfg: object | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, 2, 64, batch_first=True) for _ in range(2))
        if cfg is not None:
            self.cfg = cfg

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for b in self.blocks:
            x = b(x)
        return x


class TinyViT(nn.Module):
    """Patches by a convolution, then transformer blocks: it takes images, not token ids."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, width, 8, stride=8)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, 2, 64, batch_first=True) for _ in range(2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)
        for b in self.blocks:
            x = b(x)
        return x


def test_the_vocabulary_comes_from_the_embedding_or_a_transformerlens_cfg():
    from sigprop.pretrained import vocab_of

    assert vocab_of(TinyLM(37)) == 37
    assert vocab_of(TinyLM(37, cfg=type("Cfg", (), {"d_vocab": 11})())) == 11
    a = sp.analyze(TinyLM(37).eval(), data="random", seq_len=8, batch=2, progress=False)
    assert len(a.measured(a.blocks[0])) == 3


def test_an_image_model_takes_inputs_and_without_them_says_what_to_pass():
    vit = TinyViT().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = sp.analyze(vit, inputs=images, progress=False)
    assert len(a.measured(a.blocks[0])) == 3 and "inputs given" in a.settings["data_desc"]
    with pytest.raises(SigpropError) as e:
        sp.analyze(TinyViT().eval(), data="random", progress=False)
    assert "inputs=" in str(e.value) and "\n" not in str(e.value)
