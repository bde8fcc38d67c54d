"""Issue 29: attention probabilities of any model that calls SDPA (nanoGPT, a ViT, HF without an adapter row,
TransformerLens's hook points) equal the model's own explicit attention; gradients of any model (lm_loss, loss_fn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.functional import scaled_dot_product_attention as bound_sdpa  # bound by name: the probe cannot route it

from sigprop import SigpropError
from sigprop.probes import ADAPTERS, attention_entropy, lm_loss, measure, probe, probe_points, token_norm
from sigprop.probes.sdpa import explicit_sdpa

FUSED = F.scaled_dot_product_attention


def tokens(B: int = 2, T: int = 10, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def hooked(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------------
# The explicit path is SDPA
# ------------------------------------------------------------------------------------------------

CASES = {
    "plain": dict(),
    "causal": dict(is_causal=True),
    "scale": dict(is_causal=True, scale=0.3),
    "bool mask, a fully masked row": dict(attn_mask="bool"),
    "additive mask": dict(attn_mask="float"),
    "gqa": dict(enable_gqa=True, is_causal=True),
    "cross (L != S)": dict(S=9, is_causal=True),
}


@pytest.mark.parametrize("case", CASES)
def test_explicit_sdpa_equals_the_fused_kernel(case: str) -> None:
    kw = dict(CASES[case])
    g = torch.Generator().manual_seed(0)
    S, Hk = kw.pop("S", 6), 2 if kw.get("enable_gqa") else 4
    q, k, v = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, Hk, S, 8, generator=g), torch.randn(2, Hk, S, 5, generator=g)
    if kw.get("attn_mask") == "bool":
        mask = torch.rand(2, 1, 6, S, generator=g) > 0.3
        mask[0, 0, 2] = False  # a query that may see no key: zeros, as torch's math path
        kw["attn_mask"] = mask
    elif kw.get("attn_mask") == "float":
        kw["attn_mask"] = torch.randn(6, S, generator=g)
    out, probs = explicit_sdpa(q, k, v, **kw)
    torch.testing.assert_close(out, FUSED(q, k, v, **kw), rtol=1e-5, atol=1e-6)
    assert probs.shape == (2, 4, 6, S) and torch.allclose(probs.sum(-1)[probs.sum(-1) > 0], torch.tensor(1.0))
    if case.startswith("bool"):
        assert (probs[0, :, 2] == 0).all()


# ------------------------------------------------------------------------------------------------
# nanoGPT (Karpathy's model.py, shrunk): F.scaled_dot_product_attention on the flash path, `att` on the other
# ------------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, flash: bool = True) -> None:
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd, self.flash = n_head, n_embd, flash
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))
        self.att: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            self.att = att = F.softmax(att, dim=-1)
            y = att @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int = 64, block_size: int = 16, n_layer: int = 3, n_head: int = 4, n_embd: int = 32) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList(Block(n_embd, n_head, block_size) for _ in range(n_layer)), ln_f=nn.LayerNorm(n_embd)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None  # inference: the last position only
        logits = self.lm_head(x)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


def nanogpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT().eval()


def own_attention(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """The model's own probabilities: its non-flash path, run without any probe."""
    for b in model.transformer.h:
        b.attn.flash = False
    with torch.no_grad():
        model(idx)
    for b in model.transformer.h:
        b.attn.flash = True
    return [b.attn.att for b in model.transformer.h]


def test_nanogpt_flash_path_gives_its_own_att() -> None:
    model, idx = nanogpt(), tokens(3, 12)
    with torch.no_grad():
        plain, _ = model(idx, idx)
        with probe(model, attention=True, metrics="cos_mean") as p:
            assert F.scaled_dot_product_attention is not FUSED  # routed inside the block only
            probed, _ = model(idx, idx)
    assert F.scaled_dot_product_attention is FUSED and not hooked(model)
    torch.testing.assert_close(probed, plain, rtol=1e-5, atol=1e-6)
    ent = p.metrics.query("metric == 'attn_entropy'")
    assert sorted(ent.layer.unique()) == [1, 2, 3] and sorted(ent["head"].unique()) == [0, 1, 2, 3]
    assert set(ent.module) == {f"blocks.{b}.attn.hook_pattern" for b in range(3)}
    for b, att in enumerate(own_attention(model, idx)):
        np.testing.assert_allclose(p.attention[b + 1], att.numpy(), rtol=0, atol=1e-6)
        want = attention_entropy(att).mean(-1).mean(0).numpy()
        np.testing.assert_allclose(ent[ent.layer == b + 1].sort_values("head").value, want, rtol=1e-6)


def test_nanogpt_attention_and_gradients() -> None:
    """lm_loss reads nanoGPT's `targets=`: model(idx[:, :-1], targets=idx[:, 1:]); the gradients through the explicit
    path equal those through the fused kernel, and dL/dX of the last block equals autograd's."""
    model, idx = nanogpt(), tokens(2, 12)
    p = measure(model, idx, attention=True, grad=True, activations=True)
    fused = measure(model, idx, grad=True)
    assert F.scaled_dot_product_attention is FUSED and all(q.grad is None for q in model.parameters())
    assert p.attention[1].shape == (2, 4, 11, 11)
    for metric in ("grad_norm", "grad_cos_mean", "cos_mean"):
        np.testing.assert_allclose(p.value(metric).to_numpy(), fused.value(metric).to_numpy(), rtol=1e-5, atol=1e-8)
    out = []

    def keep(module: nn.Module, inputs: object, o: torch.Tensor) -> None:
        o.retain_grad()
        out.append(o)

    handle = model.transformer.h[2].register_forward_hook(keep)
    _, loss = model(idx[:, :-1], targets=idx[:, 1:])
    loss.backward()
    handle.remove()
    torch.testing.assert_close(p.gradients[3], out[0].grad)
    assert p.value("grad_norm", 3) == pytest.approx(token_norm(out[0].grad).mean().item(), rel=1e-6)


def test_fused_kernel_restored_and_hooks_removed_when_forward_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nanogpt()

    def boom(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    monkeypatch.setattr(model.transformer.h[1].mlp, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), probe(model, attention=True) as p:
        model(tokens(), tokens())
    assert F.scaled_dot_product_attention is FUSED and not hooked(model)
    assert set(p.metrics.query("metric == 'attn_entropy'").layer) == {1, 2}  # what ran before the error is kept


class BoundAttention(nn.Module):
    """Calls the function it imported by name before any probe: out of the probe's reach."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)[:, None].chunk(3, dim=-1)
        return x + bound_sdpa(q, k, v, is_causal=True)[:, 0]


def test_bound_by_name_is_one_line_not_reached_error() -> None:
    model = nn.Sequential(BoundAttention(), BoundAttention())
    with pytest.raises(SigpropError, match="not reached") as err:
        measure(model, torch.randn(2, 5, 16), attention=True)
    assert "\n" not in str(err.value)
    assert F.scaled_dot_product_attention is FUSED and not hooked(model)
    with pytest.raises(SigpropError, match="not reached"):  # a stack without attention at all
        measure(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), torch.randn(2, 3, 4), attention=True)


class TwoAttention(nn.Module):
    """A block that calls SDPA twice (self-attention, then cross-attention to a fixed memory)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.qkv, self.q2 = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.memory = nn.Parameter(torch.randn(1, 1, 7, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)[:, None].chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, 0]
        m = self.memory.expand(x.shape[0], -1, -1, -1)
        return x + F.scaled_dot_product_attention(self.q2(x)[:, None], m, m)[:, 0]


def test_a_second_call_in_a_block_is_recorded_apart() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(TwoAttention(), TwoAttention())
    p = measure(model, torch.randn(2, 5, 16), attention=True)
    ent = p.metrics.query("metric == 'attn_entropy'")
    assert set(ent.module) == {f"blocks.{b}.attn.hook_pattern{s}" for b in (0, 1) for s in ("", "#2")}
    assert ent.groupby("module").size().to_dict() == {f"blocks.{b}.attn.hook_pattern{s}": 1 for b in (0, 1) for s in ("", "#2")}
    assert {k: v.shape for k, v in p.attention.items()} == {1: (2, 1, 5, 5), 2: (2, 1, 5, 5)}  # the first call's


# ------------------------------------------------------------------------------------------------
# A ViT: conv patches, non-causal SDPA, a class head (gradients through loss_fn)
# ------------------------------------------------------------------------------------------------


class ViTBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.norm1, self.norm2 = heads, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def qkv_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        return self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4, depth: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls, self.pos = nn.Parameter(torch.randn(1, 1, d)), nn.Parameter(0.1 * torch.randn(1, 17, d))
        self.blocks = nn.Sequential(*(ViTBlock(d, heads) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch(img).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(img)))[:, 0])


def test_vit_entropy_and_gradients_through_loss_fn() -> None:
    torch.manual_seed(0)
    vit, img = TinyViT().eval(), torch.randn(3, 3, 16, 16)
    labels = torch.tensor([0, 3, 1])
    p = measure(vit, img, attention=True)
    with torch.no_grad():  # by hand: softmax(q k^T / sqrt(d_head)) of every block, per head
        x = vit.embed(img)
        for b, block in enumerate(vit.blocks):
            q, k, _ = block.qkv_heads(x)
            A = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
            np.testing.assert_allclose(p.attention[b + 1], A.numpy(), atol=1e-6)
            got = p.metrics.query("metric == 'attn_entropy' and layer == @b + 1").sort_values("head").value
            np.testing.assert_allclose(got, attention_entropy(A).mean(-1).mean(0).numpy(), rtol=1e-6)
            x = block(x)
    with pytest.raises(SigpropError, match="loss_fn") as err:  # (B, classes) logits of an image: no guess
        measure(vit, img, grad=True)
    assert "\n" not in str(err.value)
    g = measure(vit, img, attention=True, grad=True, loss_fn=lambda m, x: F.cross_entropy(m(x), labels))
    assert list(g.value("grad_norm").index) == [0, 1, 2] and (g.value("grad_norm") > 0).all()
    assert set(g.metrics.query("metric == 'attn_entropy'").layer) == {1, 2}
    with pytest.raises(SigpropError, match="scalar loss"):
        measure(vit, img, grad=True, loss_fn=lambda m, x: F.cross_entropy(m(x), labels, reduction="none"))


# ------------------------------------------------------------------------------------------------
# Hugging Face without an adapter row: its sdpa implementation routed, equal to its eager attentions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])  # mistral: grouped-query attention (1 KV head)
def test_hf_sdpa_without_adapter_equals_eager(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from hf_tiny import VOCAB, tiny_models

    model = tiny_models()[family]()
    monkeypatch.delitem(ADAPTERS, family)  # a family nobody adapted: generic block stack, SDPA routed
    assert probe_points(model).family.startswith("generic") and model.config._attn_implementation == "sdpa"
    idx = tokens(2, 8, VOCAB)
    key_mask = torch.ones(2, 8, dtype=torch.bool)
    key_mask[1, 6:] = False  # right padding: SDPA gets HF's attention mask
    p = measure(model, idx, attention=True, key_mask=key_mask)
    assert F.scaled_dot_product_attention is FUSED and model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(idx, attention_mask=key_mask.long(), output_attentions=True).attentions
    model.set_attn_implementation("sdpa")
    ent = p.metrics.query("metric == 'attn_entropy'")
    assert sorted(ent.layer.unique()) == [1, 2]
    for l, A in enumerate(ref):
        np.testing.assert_allclose(p.attention[l + 1], A.numpy(), atol=1e-6)
        m = key_mask[:, None, :].double()
        want = ((attention_entropy(A) * m).sum(-1) / m.sum(-1)).mean(0).numpy()
        np.testing.assert_allclose(ent[ent.layer == l + 1].sort_values("head").value, want, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# TransformerLens (a stand-in module tree: HookPoint modules at canonical names, W_Q (heads, d, d_head) weights)
# ------------------------------------------------------------------------------------------------


class HookPoint(nn.Identity):
    """TransformerLens's hook module: an identity whose output hooks read."""


class TLAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        dh = d // heads
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.randn(heads, d, dh) / math.sqrt(d)) for _ in range(3))
        self.W_O = nn.Parameter(torch.randn(heads, dh, d) / math.sqrt(d))
        self.hook_pattern = HookPoint()
        self.pattern: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (torch.einsum("btd,hde->bhte", x, W) for W in (self.W_Q, self.W_K, self.W_V))
        T = x.shape[1]
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -1e5)
        self.pattern = self.hook_pattern(scores.softmax(-1))
        return torch.einsum("bhte,hed->btd", self.pattern @ v, self.W_O)


class TLMLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.W_in, self.W_out = nn.Parameter(torch.randn(d, 2 * d) / math.sqrt(d)), nn.Parameter(torch.randn(2 * d, d) / math.sqrt(2 * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_in) @ self.W_out


class TLBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2, self.attn, self.mlp = nn.LayerNorm(d), nn.LayerNorm(d), TLAttention(d, heads), TLMLP(d)
        self.hook_resid_pre, self.hook_attn_out, self.hook_mlp_out, self.hook_resid_post = (HookPoint() for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = x + self.hook_attn_out(self.attn(self.ln1(x)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class HookedTransformer(nn.Module):
    def __init__(self, vocab: int = 64, d: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed, self.unembed = nn.Embedding(vocab, d), nn.Linear(d, vocab)
        self.blocks = nn.ModuleList(TLBlock(d, heads) for _ in range(layers))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)


def test_transformer_lens_hook_points_and_weights() -> None:
    torch.manual_seed(0)
    tl, idx = HookedTransformer().eval(), tokens(2, 9)
    pts = probe_points(tl)
    block = ["hook_resid_pre", "hook_attn_out", "attn.hook_pattern", "hook_mlp_out", "hook_resid_post"]
    assert pts.family == "transformer_lens" and pts.names == [f"blocks.{l}.{s}" for l in range(2) for s in block]
    assert [w.name for w in pts.weights if w.block == 1] == [f"blocks.1.{w}" for w in ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")]
    p = measure(tl, idx, attention=True, grad=True)
    assert p.sdpa is None  # its own pattern points: nothing routed
    # By hand: the model's own patterns, and the next-token loss that lm_loss infers from its (B, T, V) logits.
    logits = tl(idx)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
    assert lm_loss(tl, idx).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    for l, b in enumerate(tl.blocks):
        np.testing.assert_allclose(p.attention[l + 1], b.attn.pattern.detach().numpy(), atol=1e-7)
        got = p.metrics.query("metric == 'grad_W_Q' and layer == @l + 1").value.item()
        assert got == pytest.approx(b.attn.W_Q.grad.norm().item(), rel=1e-5)
    assert list(p.value("cos_mean").index) == [0, 1, 2]


def test_lm_loss_says_to_pass_loss_fn() -> None:
    class Pooler(nn.Module):  # (B, d) output: no logits of the tokens
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(64, 8)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.emb(idx).mean(1)

    with pytest.raises(SigpropError, match="pass loss_fn") as err:
        lm_loss(Pooler(), tokens())
    assert "\n" not in str(err.value)
