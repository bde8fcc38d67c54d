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
    from sigprop.studies.pretrained import vocab_of

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


class PositionedViT(TinyViT):
    """An image model that also holds an nn.Embedding (learned positions, as CLIP's vision tower does): its vocabulary
    looks inferable, but token ids fail in its patch convolution."""

    def __init__(self, width: int = 32):
        super().__init__(width)
        self.pos = nn.Embedding(16, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = x + self.pos.weight[: x.shape[1]]
        for b in self.blocks:
            x = b(x)
        return x


def test_hf_style_vocabulary_lookups_prefer_the_input_embedding_and_respect_pixel_models():
    from sigprop.studies.pretrained import vocab_of

    class Positions(TinyLM):  # positions registered before the token embedding: the first nn.Embedding would be wrong
        def __init__(self):
            super().__init__(37)
            self.wpe, self.embed = nn.Embedding(64, 32), self.embed

        def get_input_embeddings(self) -> nn.Module:
            return self.embed

    m = Positions()
    assert next(x for x in m.modules() if isinstance(x, nn.Embedding)).num_embeddings in (37, 64)
    assert vocab_of(m) == 37
    pixel = TinyLM(37)
    pixel.main_input_name = "pixel_values"  # what a Hugging Face vision model declares
    assert vocab_of(pixel) is None


def test_an_image_model_whose_embedding_misleads_gets_the_one_line_error():
    with pytest.raises(SigpropError) as e:
        sp.analyze(PositionedViT().eval(), data="random", seq_len=8, batch=2, progress=False)
    assert "PositionedViT fails on token ids (2, 8)" in str(e.value) and "inputs=" in str(e.value) and "\n" not in str(e.value)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = sp.analyze(PositionedViT().eval(), inputs=images, progress=False)
    assert a.settings["batch"] == 2 and a.settings["data"] == "inputs"


def test_sigprops_own_blocks_take_token_ids_as_inputs():
    idx = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    kw = dict(depth=2, width=32, heads=2, vocab_size=50, progress=False, kernels=False)
    a = sp.analyze("pre-ln", inputs=idx, **kw)
    b = sp.analyze("pre-ln", inputs=idx.clone(), **kw)
    other = sp.analyze("pre-ln", inputs=(idx + 1) % 50, **kw)  # the batch given is the one probed
    assert (a.settings["batch"], a.settings["seq_len"]) == (2, 8) and "inputs given" in a.settings["data_desc"]
    assert a.metrics.equals(b.metrics) and len(a.measured("pre-ln")) == 3
    assert not a.metrics["value"].equals(other.metrics["value"])
    with pytest.raises(SigpropError, match="token ids") as e:
        sp.analyze("pre-ln", inputs=torch.randn(2, 3, 8, 8), **kw)
    assert "\n" not in str(e.value)
