"""Canonical probe points: the same names on sigprop models, every adapted HF family and the generic fallback."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
import torch
from torch import nn

from sigprop import SigpropError, build_model
from sigprop.probes import ADAPTERS, attention_entropy, cos_mean, kernel, measure, probe, probe_points

transformers = pytest.importorskip("transformers")
from hf_tiny import VOCAB, tiny_models  # noqa: E402

FAMILIES = ["gpt2", "gpt_neox", "llama", "mistral", "qwen2", "bert", "roberta", "opt"]
HF_BLOCK = ["hook_resid_pre", "hook_attn_out", "attn.hook_pattern", "hook_mlp_out", "hook_resid_post"]


def tokens(B: int = 2, T: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_reaches_the_canonical_names(family: str) -> None:
    model = tiny_models()[family]()
    pts = probe_points(model)
    assert pts.family == family and family in ADAPTERS
    # The regression pin: the ordered probe points of a 2-block model.
    assert pts.names == [f"blocks.{l}.{s}" for l in range(2) for s in HF_BLOCK]
    assert [w.name.split(".", 2)[2] for w in pts.weights if w.block == 0][:4] == ["attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O"]
    idx = tokens()
    with torch.no_grad():
        hidden = model(idx, output_hidden_states=True).hidden_states
    p = measure(model, idx)
    cos = p.value("cos_mean")
    assert list(cos.index) == [0, 1, 2]  # the embedding layer plus one per block
    # Layer 0 (the input of block 0, via a pre-hook) and layer 1 match HF's own hidden states.
    for layer in (0, 1):
        assert cos.loc[layer] == pytest.approx(cos_mean(kernel(hidden[layer])).mean().item(), rel=1e-6)
    for w in pts.weights:  # fused matrices split into square-ish parts of the right size
        assert w.of(w.param).numel() > 0


def test_pinned_names_of_sigprop_models() -> None:
    names = probe_points(build_model("sas", seed=0, depth=2, width=32, heads=4, vocab_size=64, context=16)).names
    sas_block = ["hook_resid_pre", "hook_attn_out", "attn.hook_pattern", "attn.hook_matrix", "hook_mlp_out", "hook_resid_post"]
    assert names == [f"blocks.{l}.{s}" for l in range(2) for s in sas_block]
    plain = probe_points(build_model("pre-ln", seed=0, depth=2, width=32, heads=4, vocab_size=64, context=16)).names
    assert plain == [f"blocks.{l}.{s}" for l in range(2) for s in HF_BLOCK]


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_attention_probabilities_on_the_fused_kernel(family: str) -> None:
    """The model runs SDPA; on the probe pass alone the eager path gives the probabilities HF would output."""
    model = tiny_models()[family]()
    assert model.config._attn_implementation == "sdpa"
    idx = tokens(2, 8)
    with torch.no_grad():
        plain = model(idx).logits
        p = measure(model, idx, attention=True)
        assert model.config._attn_implementation == "sdpa"  # switched back
        model.set_attn_implementation("eager")
        ref = model(idx, output_attentions=True).attentions
        model.set_attn_implementation("sdpa")
        torch.testing.assert_close(model(idx).logits, plain)
    ent = p.metrics.query("metric == 'attn_entropy'")
    assert sorted(ent.layer.unique()) == [1, 2] and sorted(ent["head"].unique()) == [0, 1]
    for l, A in enumerate(ref):
        np.testing.assert_allclose(p.attention[l + 1], A.numpy(), rtol=1e-5, atol=1e-7)
        want = attention_entropy(A).mean(-1).mean(0).numpy()  # per head, mean over queries and sequences
        got = ent[ent.layer == l + 1].sort_values("head").value.to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_point_globs_select_branches() -> None:
    model = tiny_models()["llama"]()
    p = measure(model, tokens(), layers="blocks.*.hook_mlp_out", metrics="norm_sq")
    assert p.layers == {1: "blocks.0.hook_mlp_out", 2: "blocks.1.hook_mlp_out"}
    seen = []
    handle = model.model.layers[1].mlp.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(tokens())
    handle.remove()
    assert p.value("norm_sq", 2) == pytest.approx(float((seen[0].double() ** 2).mean()), rel=1e-6)


class Tower(nn.Module):
    """A model nobody adapted: embeddings, a stack of blocks returning tuples, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.layers = nn.ModuleList(Layer() for _ in range(3))
        self.head = nn.Linear(16, 50)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for layer in self.layers:
            x, _ = layer(x)
        return self.head(x)


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x + torch.tanh(self.lin(x)), None


def test_generic_fallback_finds_the_block_stack() -> None:
    torch.manual_seed(0)
    net = Tower()
    pts = probe_points(net)
    assert pts.family.startswith("generic") and pts.names[:2] == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]
    idx = torch.randint(0, 50, (2, 7))
    p = measure(net, idx, activations=True)
    assert list(p.value("cos_mean").index) == [0, 1, 2, 3]
    torch.testing.assert_close(p.activations[0], net.emb(idx))  # layer 0 = the input of the first block
    with pytest.raises(SigpropError, match="cannot tell which modules of Linear") as err:
        probe(nn.Linear(3, 3))
    assert "\n" not in str(err.value)


def test_probes_import_nothing_from_blocks() -> None:
    for path in pathlib.Path("sigprop/probes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("sigprop.blocks") for n in names), f"{path} imports {names}"


def test_sigprops_attention_and_branch_points_are_the_modules_of_the_same_path():
    """Issue 26: the canonical attn.hook_pattern was the module hook_softmax (and hook_matrix the module hook_pattern)."""
    from sigprop import build_model

    model = build_model("sas", depth=2, width=32, heads=2, vocab_size=50, context=8)
    modules = dict(model.named_modules())
    for name, module in model.probe_points().items():
        if not name.endswith(("hook_resid_pre", "hook_resid_post")):
            assert modules[name] is module, name


def test_a_glob_that_names_points_and_other_modules_is_refused_and_prefixes_choose():
    """Issue 31 item 4: a model whose own modules carry canonical-looking names (TransformerLens's HookPoints) must not
    silently get module-path matches where canonical points were meant, or the reverse."""
    import pytest
    import torch
    from torch import nn

    from sigprop import SigpropError, build_model, measure

    model = build_model("pre-ln", depth=2, width=32, heads=2, vocab_size=50, context=8)
    model.blocks[0].add_module("hook_resid_post", nn.Identity())  # a module path that is also a canonical name
    idx = torch.randint(0, 50, (1, 8))
    with pytest.raises(SigpropError) as e:
        measure(model, idx, layers="blocks.*.hook_resid_post")
    assert "point:" in str(e.value) and "module:" in str(e.value) and "\n" not in str(e.value)
    points = measure(model, idx, layers="point:blocks.*.hook_resid_post")
    assert points.layers == {1: "blocks.0.hook_resid_post", 2: "blocks.1.hook_resid_post"}
    paths = measure(model, idx, layers="module:blocks.*.hook_resid_post")
    assert list(paths.layers.values()) == ["blocks.0.hook_resid_post"]
    assert measure(model, idx, layers="blocks.*.attn.hook_pattern", metrics="cos_mean").layers  # same modules: fine
    assert (points.matched, paths.matched) == ("point", "module")


def test_module_paths_named_like_points_are_said_to_be_modules():
    """Issue 31 item 4: on a TransformerLens-like model whose hook modules sigprop does not take for HookPoints,
    'blocks.*.attn.hook_pattern' reaches its modules by path: numbered 0, 1, ..., and the result says so (and warns)."""
    import warnings

    import pytest
    import torch
    from torch import nn

    from sigprop import SigpropError, measure

    class Attn(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.qkv, self.hook_pattern = nn.Linear(d, 3 * d), nn.Identity()  # named like TL's HookPoint

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, -1)
            return self.hook_pattern((q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)) @ v

    class Block(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.attn, self.hook_resid_post = Attn(d), nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.hook_resid_post(x + self.attn(x))

    class LookAlike(nn.Module):
        def __init__(self, d: int = 16):
            super().__init__()
            self.embed, self.blocks = nn.Embedding(20, d), nn.ModuleList(Block(d) for _ in range(3))

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.embed(idx)
            for b in self.blocks:
                x = b(x)
            return x

    model, idx = LookAlike(), torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="read as modules") as w:
        p = measure(model, idx, layers="blocks.*.attn.hook_pattern", metrics="cos_mean")
    assert len(w) == 1 and "\n" not in str(w[0].message) and "module:" in str(w[0].message)
    assert p.matched == "module" and p.layers == {i: f"blocks.{i}.attn.hook_pattern" for i in range(3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explicit = measure(model, idx, layers="module:blocks.*.attn.hook_pattern", metrics="cos_mean")
        assert explicit.matched == "module" and explicit.layers == p.layers
        default = measure(model, idx, metrics="cos_mean")  # sigprop's own reading: the generic block stack
        assert default.matched == "point" and list(default.layers) == [0, 1, 2, 3]
        # its canonical resid_post points are the blocks; the same glob over module paths finds the hook modules
        with pytest.raises(SigpropError, match="point:"):
            measure(model, idx, layers="blocks.*.hook_resid_post")
    with pytest.raises(SigpropError, match="matches no canonical probe point"):
        measure(model, idx, layers="point:blocks.*.attn.hook_pattern")
