"""Canonical probe points for any model: one naming scheme, reached by declaration, an adapter table or a fallback.

Per block l (names as TransformerLens's `blocks.{l}.hook_resid_post`):

    blocks.{l}.hook_resid_pre     residual stream entering block l       (layer l; layer 0 = the embedding)
    blocks.{l}.hook_attn_out      attention branch output                (layer l + 1)
    blocks.{l}.hook_mlp_out       MLP branch output                      (layer l + 1)
    blocks.{l}.attn.hook_pattern  softmax attention probabilities (B, H, T, T), where they exist
    blocks.{l}.attn.hook_matrix   the whole matrix applied to V (shaped attention), where it differs
    blocks.{l}.hook_resid_post    residual stream leaving block l        (layer l + 1)

and the weights whose gradients the backward probes read: blocks.{l}.attn.W_Q, W_K, W_V, W_O and
blocks.{l}.mlp.W_in, W_gate, W_out. Three ways to reach them, tried in order:

1. the model declares them: `model.probe_points() -> {canonical name: module whose output it is}`,
   `model.probe_weights() -> {canonical weight name: parameter}` and optionally
   `model.attention_patterns()` (a context manager under which the pattern points fire) - sigprop's models;
2. a TransformerLens HookedTransformer (duck-typed: `HookPoint` modules named `blocks.{l}.attn.hook_pattern`;
   its hook points and weights already carry the canonical names);
3. a Hugging Face model whose `config.model_type` is in `ADAPTERS` (data: module paths per family);
4. the generic fallback: the longest stack of same-class blocks in any nn.Module (resid points only).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from sigprop.errors import SigpropError

#: Point kinds in the order they appear within a block.
KINDS = ("resid_pre", "attn_out", "pattern", "matrix", "mlp_out", "resid_post")
_NAME = re.compile(r"blocks\.(\d+)\.(hook_resid_pre|hook_attn_out|hook_mlp_out|attn\.hook_pattern|attn\.hook_matrix|hook_resid_post)")
_KIND = {"hook_resid_pre": "resid_pre", "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out",
         "attn.hook_pattern": "pattern", "attn.hook_matrix": "matrix", "hook_resid_post": "resid_post"}
_SUFFIX = {v: k for k, v in _KIND.items()}


def point_name(block: int, kind: str) -> str:
    """The canonical name of a point: point_name(3, "resid_post") -> 'blocks.3.hook_resid_post'."""
    return f"blocks.{block}.{_SUFFIX[kind]}"


@dataclass(frozen=True)
class Point:
    """One probe point: where to hook and which part of the module's input/output is the tensor."""

    name: str  # canonical name
    block: int
    kind: str  # one of KINDS
    module: nn.Module
    module_name: str  # the hooked module's own qualified name
    pre: bool = False  # read the module's input (forward pre-hook) instead of its output
    index: int = 0  # which element of a tuple output (HF attention: 0 = output, 1 = probabilities)

    @property
    def layer(self) -> int:
        """Depth position in tables and figures: l for the stream entering block l, else l + 1."""
        return self.block if self.kind == "resid_pre" else self.block + 1


@dataclass(frozen=True)
class Weight:
    """One weight matrix whose gradient a backward probe reads; `split` picks a slice of a fused matrix."""

    name: str  # blocks.{l}.attn.W_Q ...
    block: int
    param: nn.Parameter
    split: tuple[str, int, int] | None = None  # ("cols" | "rows" | "heads", parts, part)
    heads: int = 0

    def of(self, t: torch.Tensor) -> torch.Tensor:
        """The slice of `t` (the parameter or its gradient) that is this weight."""
        if self.split is None:
            return t
        how, parts, part = self.split
        if how == "cols":
            return t.chunk(parts, dim=1)[part]
        if how == "rows":
            return t.chunk(parts, dim=0)[part]
        return t.reshape(self.heads, parts, -1, *t.shape[1:])[:, part]  # per-head interleaved (GPT-NeoX)


@dataclass
class ProbePoints:
    """Everything a probe needs to know about a model: ordered points, weights, and how to get patterns."""

    family: str
    points: list[Point]
    weights: list[Weight] = field(default_factory=list)
    patterns: Callable[[], contextlib.AbstractContextManager] | None = None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.points]

    @property
    def depth(self) -> int:
        return 1 + max(p.block for p in self.points)

    def of_kind(self, *kinds: str) -> list[Point]:
        return [p for p in self.points if p.kind in kinds]

    def stream(self) -> list[Point]:
        """Layer 0 (the stream entering block 0) and the stream leaving every block: the default layers."""
        return [p for p in self.points if (p.kind == "resid_pre" and p.block == 0) or p.kind == "resid_post"]


# ------------------------------------------------------------------------------------------------
# Hugging Face families: module paths, as data
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    """Where a family keeps its blocks and branches (paths relative to `model.base_model` / to a block)."""

    blocks: str  # the ModuleList of blocks
    attn: str  # the attention module: returns (output, probabilities) on the eager path
    attn_out: str  # the module whose output (first element) is the attention branch
    mlp_out: str  # the module whose output is the MLP branch
    weights: dict[str, str]  # canonical weight -> "param path" or "param path|cols3:0" (fused, chunked)


_LLAMA = Adapter(
    "layers", "self_attn", "self_attn", "mlp",
    {"attn.W_Q": "self_attn.q_proj.weight", "attn.W_K": "self_attn.k_proj.weight", "attn.W_V": "self_attn.v_proj.weight",
     "attn.W_O": "self_attn.o_proj.weight", "mlp.W_gate": "mlp.gate_proj.weight", "mlp.W_in": "mlp.up_proj.weight",
     "mlp.W_out": "mlp.down_proj.weight"},
)
_BERT = Adapter(
    "encoder.layer", "attention.self", "attention.output.dense", "output.dense",
    {"attn.W_Q": "attention.self.query.weight", "attn.W_K": "attention.self.key.weight", "attn.W_V": "attention.self.value.weight",
     "attn.W_O": "attention.output.dense.weight", "mlp.W_in": "intermediate.dense.weight", "mlp.W_out": "output.dense.weight"},
)
#: config.model_type -> Adapter. Add a family by adding a row.
ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter(
        "h", "attn", "attn", "mlp",
        {"attn.W_Q": "attn.c_attn.weight|cols3:0", "attn.W_K": "attn.c_attn.weight|cols3:1", "attn.W_V": "attn.c_attn.weight|cols3:2",
         "attn.W_O": "attn.c_proj.weight", "mlp.W_in": "mlp.c_fc.weight", "mlp.W_out": "mlp.c_proj.weight"},
    ),
    "gpt_neox": Adapter(
        "layers", "attention", "attention", "mlp",
        {"attn.W_Q": "attention.query_key_value.weight|heads3:0", "attn.W_K": "attention.query_key_value.weight|heads3:1",
         "attn.W_V": "attention.query_key_value.weight|heads3:2", "attn.W_O": "attention.dense.weight",
         "mlp.W_in": "mlp.dense_h_to_4h.weight", "mlp.W_out": "mlp.dense_4h_to_h.weight"},
    ),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "bert": _BERT,
    "roberta": _BERT,
    "opt": Adapter(
        "decoder.layers", "self_attn", "self_attn", "fc2",
        {"attn.W_Q": "self_attn.q_proj.weight", "attn.W_K": "self_attn.k_proj.weight", "attn.W_V": "self_attn.v_proj.weight",
         "attn.W_O": "self_attn.out_proj.weight", "mlp.W_in": "fc1.weight", "mlp.W_out": "fc2.weight"},
    ),
}


def _get(root: nn.Module, path: str) -> nn.Module | nn.Parameter:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _parse_split(spec: str) -> tuple[str, tuple[str, int, int] | None]:
    """'attn.c_attn.weight|cols3:0' -> ('attn.c_attn.weight', ('cols', 3, 0))."""
    path, _, split = spec.partition("|")
    if not split:
        return path, None
    m = re.fullmatch(r"(cols|rows|heads)(\d+):(\d+)", split)
    if m is None:
        raise ValueError(f"bad weight split {split!r}")
    return path, (m[1], int(m[2]), int(m[3]))


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch an HF model to its eager attention (which returns probabilities) for the `with` block only."""
    before = getattr(model.config, "_attn_implementation", None)
    switch = before != "eager" and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def _hf_points(model: nn.Module, adapter: Adapter) -> ProbePoints:
    base = model.base_model
    names = {id(m): n for n, m in model.named_modules()}
    blocks = _get(base, adapter.blocks)
    heads = int(getattr(model.config, "num_attention_heads", 0) or 0)
    points, weights = [], []
    for l, block in enumerate(blocks):
        def pt(kind: str, module: nn.Module, pre: bool = False, index: int = 0) -> Point:
            return Point(point_name(l, kind), l, kind, module, names[id(module)], pre, index)

        attn = _get(block, adapter.attn)
        points += [pt("resid_pre", block, pre=True), pt("attn_out", _get(block, adapter.attn_out)),
                   pt("pattern", attn, index=1), pt("mlp_out", _get(block, adapter.mlp_out)), pt("resid_post", block)]
        for wname, spec in adapter.weights.items():
            path, split = _parse_split(spec)
            weights.append(Weight(f"blocks.{l}.{wname}", l, _get(block, path), split, heads))
    return ProbePoints(model.config.model_type, points, weights, lambda: eager_attention(model))


def _declared_points(model: nn.Module) -> ProbePoints:
    """A model that declares its points (sigprop's): {canonical name: module whose output it is}."""
    names = {id(m): n for n, m in model.named_modules()}
    points = []
    for name, module in model.probe_points().items():
        m = _NAME.fullmatch(name)
        if m is None:
            raise SigpropError(f"{type(model).__name__}.probe_points() names {name!r}, not a canonical probe point")
        points.append(Point(name, int(m[1]), _KIND[m[2]], module, names[id(module)]))
    weights = []
    for name, param in (model.probe_weights() if hasattr(model, "probe_weights") else {}).items():
        weights.append(Weight(name, int(name.split(".")[1]), param))
    patterns = getattr(model, "attention_patterns", None)
    return ProbePoints(type(model).__name__, points, weights, patterns)


#: Parameter names of TransformerLens weights, which are the canonical weight names (W_Q: (heads, d, d_head), ...).
_TL_WEIGHT = re.compile(r"blocks\.(\d+)\.(attn\.W_[QKVO]|mlp\.W_in|mlp\.W_gate|mlp\.W_out)")


def _hookpoint_points(model: nn.Module) -> ProbePoints | None:
    """TransformerLens: `HookPoint` modules at canonical names (their outputs are the points), None if it has none."""
    hooks = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "HookPoint" and _NAME.fullmatch(n)]
    if not any(n.endswith(".attn.hook_pattern") for n, _ in hooks):
        return None
    points = []
    for name, module in hooks:
        m = _NAME.fullmatch(name)
        points.append(Point(name, int(m[1]), _KIND[m[2]], module, name))
    points.sort(key=lambda p: (p.block, KINDS.index(p.kind)))
    weights = [Weight(n, int(m[1]), param) for n, param in model.named_parameters() if (m := _TL_WEIGHT.fullmatch(n))]
    return ProbePoints("transformer_lens", points, weights)


def block_stack(model: nn.Module) -> tuple[str, nn.ModuleList | nn.Sequential] | None:
    """The longest ModuleList/Sequential of >= 2 same-class blocks that hold parameters (ties: most parameters)."""
    best, key = None, (0, 0)
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) < 2:
            continue
        kinds = {type(c) for c in m}
        n_params = sum(p.numel() for p in m.parameters())
        if len(kinds) == 1 and all(any(True for _ in c.parameters()) for c in m) and (len(m), n_params) > key:
            best, key = (name, m), (len(m), n_params)
    return best


def _generic_points(model: nn.Module) -> ProbePoints | None:
    found = block_stack(model)
    if found is None:
        return None
    prefix, blocks = found
    points = []
    for l, block in enumerate(blocks):
        name = f"{prefix}.{l}" if prefix else str(l)
        points += [Point(point_name(l, "resid_pre"), l, "resid_pre", block, name, pre=True),
                   Point(point_name(l, "resid_post"), l, "resid_post", block, name)]
    return ProbePoints(f"generic ({type(blocks[0]).__name__} x {len(blocks)})", points)


def probe_points(model: nn.Module) -> ProbePoints:
    """The canonical probe points of any model (see the module docstring for the lookup order)."""
    if callable(getattr(model, "probe_points", None)):
        return _declared_points(model)
    hooked = _hookpoint_points(model)
    if hooked is not None:
        return hooked
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ADAPTERS and isinstance(getattr(model, "base_model", None), nn.Module):
        return _hf_points(model, ADAPTERS[model_type])
    generic = _generic_points(model)
    if generic is None:
        raise SigpropError(
            f"cannot tell which modules of {type(model).__name__} are its layers; pass layers= "
            "(a name pattern such as 'encoder.layer.*', a list of modules/names, or {layer: module})"
        )
    return generic
