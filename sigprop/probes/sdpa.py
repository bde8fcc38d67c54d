"""Attention probabilities of any model that calls `torch.nn.functional.scaled_dot_product_attention`.

A fused SDPA kernel never forms the T x T probabilities, so a model without attention probe points of its own
(nanoGPT, timm's ViT, a Hugging Face family without an adapter row) has nothing to hook. For the probe pass only,
`SDPARoute` replaces the module attribute `torch.nn.functional.scaled_dot_product_attention` with `explicit_sdpa`
(softmax(Q K^T * scale + mask) @ V, the math of the fused kernel) and hands each call's probabilities to the probe,
attributed to the block whose forward is running (tracked with forward pre/post hooks on the block modules):
block b -> layer b + 1, point `blocks.{b}.attn.hook_pattern`, as for sigprop's own models.

Covered: every call that looks the function up on the module at call time (`F.scaled_dot_product_attention`,
`torch.nn.functional.scaled_dot_product_attention`: nanoGPT, timm, Hugging Face's sdpa implementation). Not covered:
a model that bound the function to its own name before the probe (`from torch.nn.functional import
scaled_dot_product_attention`); the probe then sees no call and says so (`SDPARoute.check_reached`). Calls outside
every block run the original kernel and are not recorded. The patch is process-wide while the `with` block runs
(other threads calling SDPA meanwhile take the explicit path too) and is undone on exit, also on exceptions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sigprop.errors import SigpropError
from sigprop.probes.layers import Target, unwrap
from sigprop.probes.points import block_stack, point_name

#: (probabilities (B, H, L, S), the call's number within the block's forward: 1, 2, ...) -> None
PatternSink = Callable[[torch.Tensor, int], None]


def explicit_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, probabilities before dropout) of `F.scaled_dot_product_attention` computed explicitly.

    Same arguments and semantics: a bool attn_mask keeps True entries, a float one is added to the logits;
    is_causal masks above the (upper-left aligned) diagonal; scale defaults to 1/sqrt(E); enable_gqa repeats
    each key/value head over its group of query heads. Rows with every key masked give zeros (torch's math path).
    """
    L, S = query.shape[-2], key.shape[-2]
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        group = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(group, -3), value.repeat_interleave(group, -3)
    logits = query @ key.transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    probs = torch.softmax(logits, dim=-1)
    probs = probs.masked_fill((logits == float("-inf")).all(-1, keepdim=True), 0.0)
    applied = torch.dropout(probs, dropout_p, train=True) if dropout_p > 0 else probs
    return applied @ value, probs


def _heads(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities as (B, H, L, S): extra leading dims fold into B; a (N, L, S) call is N sequences of one head."""
    if probs.ndim == 3:
        return probs[:, None]
    return probs.reshape(-1, *probs.shape[-3:])


class SDPARoute:
    """A context manager: while open, SDPA calls inside `blocks` take `explicit_sdpa` and feed their block's sink.

    blocks: the block modules in order; sinks[i] receives the probabilities of the calls made inside blocks[i].
    """

    def __init__(self, blocks: Sequence[nn.Module], sinks: Sequence[PatternSink]):
        if len(blocks) != len(sinks):
            raise ValueError(f"SDPARoute: {len(blocks)} blocks but {len(sinks)} sinks")
        self.blocks, self.sinks = list(blocks), list(sinks)
        self.calls = 0  # SDPA calls routed through the explicit path
        self.block_forwards = 0  # forwards of the blocks seen while open
        self._running: list[list[int]] = []  # stack of [block index, calls so far in this forward]
        self._original: Callable | None = None
        self._stack: contextlib.ExitStack | None = None

    def _pre(self, index: int):
        def hook(module: nn.Module, args: tuple) -> None:
            self._running.append([index, 0])
            self.block_forwards += 1

        return hook

    def _post(self, module: nn.Module, args: tuple, output: object) -> None:
        if self._running:
            self._running.pop()

    def _sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """The stand-in for F.scaled_dot_product_attention: the fused kernel outside blocks, explicit inside."""
        if not self._running:
            extra = {"enable_gqa": True} if enable_gqa else {}
            return self._original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                  scale=scale, **extra)
        out, probs = explicit_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        frame = self._running[-1]
        frame[1] += 1
        self.calls += 1
        self.sinks[frame[0]](_heads(probs), frame[1])
        return out

    def __enter__(self) -> SDPARoute:
        if self._stack is not None:
            raise SigpropError("this SDPA route is already open; use a new probe(...) for a nested `with`")
        stack = contextlib.ExitStack()
        try:
            for i, block in enumerate(self.blocks):
                stack.callback(block.register_forward_pre_hook(self._pre(i)).remove)
                stack.callback(block.register_forward_hook(self._post, always_call=True).remove)
            self._original = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = self._sdpa
            stack.callback(self._restore)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _restore(self) -> None:
        F.scaled_dot_product_attention = self._original
        self._running.clear()

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def check_reached(self, model: nn.Module) -> None:
        """Raise when the blocks ran but no SDPA call came through: the probabilities were not reached."""
        if self.block_forwards and not self.calls:
            raise SigpropError(
                f"attention=True: {type(model).__name__} ran its blocks without calling "
                "torch.nn.functional.scaled_dot_product_attention, so attention probabilities were not reached; accepted: "
                "models that call F.scaled_dot_product_attention at run time (not bound by name before the probe) or "
                "declare blocks.*.attn.hook_pattern points"
            )


def sdpa_route(model: nn.Module, targets: Sequence[Target], sink_for: Callable[[Target], PatternSink]) -> SDPARoute | None:
    """The route for a model without attention points: its block stack (`points.block_stack`; block b records under
    layer b + 1, `blocks.{b}.attn.hook_pattern`), else the probed `layers=` modules (under their own layer numbers,
    '<name>.sdpa'); None when there is neither. sink_for(target) gives the function that records that block's calls."""
    found = block_stack(unwrap(model))
    if found is not None:
        pairs = [(m, Target(b + 1, point_name(b, "pattern"), m)) for b, m in enumerate(found[1])]
    else:
        pairs = [(t.module, Target(t.layer, f"{t.name}.sdpa", t.module)) for t in targets if not t.pre]
    if not pairs:
        return None
    return SDPARoute([m for m, _ in pairs], [sink_for(t) for _, t in pairs])
