"""Probes: forward hooks on any nn.Module that turn per-layer outputs into tidy metric rows.

    with probe(model) as p:          # any model: layer 0 = blocks.0.hook_resid_pre, layer l = blocks.{l-1}.hook_resid_post
        model(idx)
    p.metrics                        # DataFrame: layer, module (probe point), metric, head, value (mean over sequences)

The layers are the model's canonical probe points (`sigprop.probes.points`): sigprop's models declare
them, Hugging Face families come from an adapter table, anything else from its stack of same-class
blocks. Each hook computes the kernel metrics of every sequence in float64 from the activations directly
(`sigprop.probes.direct`: the smaller of the T x T and d x d Gram for the spectrum, a chunk of sequences at a time)
and only keeps the metrics (so memory stays O(rows)); kernels, attention matrices and activations are kept only
when asked. Hooks are always removed, and attention is switched back to its fast path (sigprop's
explicit flag, HF's attention implementation), when the `with` block ends, also when the forward raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from sigprop.errors import SigpropError, check_choice
from sigprop.probes.backward import lm_loss, weight_grad_norms
from sigprop.probes.direct import layer_cos_mean, layer_metrics
from sigprop.probes.metrics import (KERNEL_METRICS, attention_entropy, entropy_ratio, outlier_stats, singular_ratio, sink_share,
                                    token_norm)
from sigprop.probes.layers import Layers, Target, points_or_none, resolve_layers, unwrap
from sigprop.probes.sdpa import PatternSink, sdpa_route

#: Metrics a probe can record per layer: the kernel metrics plus activation kurtosis.
LAYER_METRICS = (*KERNEL_METRICS, "kurtosis")
DEFAULT_METRICS = tuple(KERNEL_METRICS)
#: Up to this sequence length attention probes also record sigma_2 / sigma_1 of every attention matrix (an SVD per
#: head and sequence: O(T^3), seconds per layer beyond it).
SVD_MAX_T = 256

# ------------------------------------------------------------------------------------------------
# The probe
# ------------------------------------------------------------------------------------------------


def _stream(output: object, where: str) -> torch.Tensor:
    """The residual-stream tensor of a module output (tuples/lists/dicts: the first element)."""
    if isinstance(output, Mapping):
        output = next(iter(output.values()), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    if not isinstance(output, torch.Tensor) or output.ndim < 2:
        kind = type(output).__name__ if not isinstance(output, torch.Tensor) else f"tensor of shape {tuple(output.shape)}"
        raise SigpropError(f"probe: {where} returned a {kind}; accepted: a (..., T, d) tensor or a tuple starting with one")
    return output


def _element(output: object, index: int, where: str) -> torch.Tensor:
    """Element `index` of a tuple output (0: the stream itself, via `_stream`)."""
    if index == 0:
        return _stream(output, where)
    item = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
    if not isinstance(item, torch.Tensor):
        raise SigpropError(f"probe: {where} gave no tensor at output[{index}] (attention probabilities); got {type(item).__name__}")
    return item


class Probe:
    """Records signal-propagation metrics per layer while a model runs; use through `probe(...)`."""

    def __init__(
        self,
        model: nn.Module,
        layers: Layers = None,
        attention: bool = False,
        kernels: bool = False,
        activations: bool = False,
        metrics: Iterable[str] | str = DEFAULT_METRICS,
        key_mask: torch.Tensor | None = None,
        grad: bool = False,
        outliers: bool = False,
    ):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else list(metrics)
        for m in metrics:
            check_choice("metric", m, LAYER_METRICS)
        if key_mask is not None and (not isinstance(key_mask, torch.Tensor) or key_mask.ndim != 2):
            raise SigpropError(f"key_mask must be a (B, T) bool tensor, got {getattr(key_mask, 'shape', key_mask)!r}")
        self.model, self.metric_names = model, metrics
        self.keep_kernels, self.keep_activations, self.grad = kernels, activations, grad
        self.key_mask = None if key_mask is None else key_mask.bool()
        self._call_mask: torch.Tensor | None = None  # the attention_mask= of the forward running now (read, not given)
        self._warned_mask = False
        self.targets = resolve_layers(model, layers)
        self.attention_on, self.outliers = attention, outliers
        self.points = points_or_none(unwrap(model)) if attention or outliers else None
        self.pattern_targets, self.matrix_targets = self._attention_targets() if attention or outliers else ([], [])
        if not attention:  # outliers alone: the sink share needs the probabilities, not the kept matrices
            self.matrix_targets = []
        # No attention points of its own: route its F.scaled_dot_product_attention calls (sigprop.probes.sdpa).
        self.sdpa = sdpa_route(model, self.targets, self._sdpa_sink) if attention and not self.pattern_targets else None
        if attention and not self.pattern_targets and self.sdpa is None:
            raise SigpropError(
                f"attention=True needs attention probabilities (blocks.*.attn.hook_pattern); {type(model).__name__} "
                "has no such probe point and no blocks whose SDPA calls could be routed (pass layers=)"
            )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stack: contextlib.ExitStack | None = None
        self._rows: list[dict[str, np.ndarray]] = []
        self._seen: dict[str, int] = defaultdict(int)
        self._kernels: dict[int, list[np.ndarray]] = defaultdict(list)
        self._attention: dict[int, list[np.ndarray]] = defaultdict(list)
        self._activations: dict[int, list[torch.Tensor]] = defaultdict(list)
        self._gradients: dict[int, list[torch.Tensor]] = defaultdict(list)
        self._frame: pd.DataFrame | None = None

    @property
    def layers(self) -> dict[int, str]:
        """{layer number: probe point or module name} of the probed tensors."""
        return {t.layer: t.name for t in self.targets}

    @property
    def matched(self) -> str:
        """What `layers` names: 'point' (canonical probe points), 'module' (module paths) or 'mixed'."""
        kinds = {t.matched for t in self.targets}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def _attention_targets(self) -> tuple[list[Target], list[Target]]:
        """(probability points, points whose matrices `.attention` keeps: the whole matrix where it differs)."""
        if self.points is None:
            return [], []
        patterns = [Target.of(p) for p in self.points.of_kind("pattern")]
        matrix = {p.block: Target.of(p) for p in self.points.of_kind("matrix")}
        by_block = {p.block: Target.of(p) for p in self.points.of_kind("pattern")}
        return patterns, [matrix.get(b, t) for b, t in by_block.items()]

    # -- attach / detach --------------------------------------------------------------------------
    def __enter__(self) -> Probe:
        if self._handles or self._stack is not None:
            raise SigpropError("this probe is already attached; use a new probe(...) for a nested `with`")
        try:
            self._stack = contextlib.ExitStack()
            for t in self.targets:
                self._handles.append(self._register(t, self._stream_hook(t)))
            if self.pattern_targets:
                if self.points.patterns is not None:
                    self._stack.enter_context(self.points.patterns())
                for t in self.pattern_targets:
                    self._handles.append(self._register(t, self._softmax_hook(t)))
                for t in self.matrix_targets:
                    self._handles.append(self._register(t, self._pattern_hook(t)))
            if self.sdpa is not None:
                self._stack.enter_context(self.sdpa)
            if self.key_mask is None:  # read the padding mask the model is called with, where it is visible
                top = unwrap(self.model)
                self._handles.append(top.register_forward_pre_hook(self._read_call_mask, with_kwargs=True))
                self._handles.append(top.register_forward_hook(lambda *_: setattr(self, "_call_mask", None)))
        except BaseException:
            self.detach()
            raise
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self.detach()
        if exc_type is None and self.sdpa is not None:
            self.sdpa.check_reached(self.model)  # blocks ran but no SDPA call came through: say so

    def detach(self) -> None:
        """Remove every hook and switch attention back to what it was (fast path, attention implementation)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    @staticmethod
    def _register(t: Target, fn) -> torch.utils.hooks.RemovableHandle:
        """A forward hook fn(tensor) on the target's output element, or a pre-hook on its first input."""
        where = t.name
        if t.pre:
            def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
                x = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
                fn(_stream(x, where))

            return t.module.register_forward_pre_hook(pre, with_kwargs=True)

        def post(module: nn.Module, inputs: object, output: object) -> None:
            fn(_element(output, t.index, where))

        return t.module.register_forward_hook(post)

    # -- hooks ------------------------------------------------------------------------------------
    def _read_call_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Take a (B, T) 0/1 `attention_mask=` of the model call as the key mask (issue 31: padded tokens were counted
        silently); any other form of mask is not read, and a one-line warning says the padding counts."""
        mask = kwargs.get("attention_mask")
        if mask is None:
            return
        if isinstance(mask, torch.Tensor) and mask.ndim == 2 and bool(((mask == 0) | (mask == 1)).all()):
            self._call_mask = mask.bool()
        elif not self._warned_mask:
            self._warned_mask = True
            warnings.warn(f"probe: the model's attention_mask of shape {tuple(getattr(mask, 'shape', ()))} is not a (B, T) "
                          "0/1 mask; its padded tokens count in every metric (pass key_mask= to exclude them)", stacklevel=2)

    def _mask_for(self, shape: torch.Size, where: str) -> torch.Tensor | None:
        if self.key_mask is None and self._call_mask is not None and tuple(self._call_mask.shape) == tuple(shape):
            return self._call_mask
        if self.key_mask is None:
            return None
        if tuple(self.key_mask.shape) != tuple(shape):
            raise SigpropError(f"probe: key_mask has shape {tuple(self.key_mask.shape)} but {where} has (B, T) = {tuple(shape)}")
        return self.key_mask

    def _add(self, t: Target, metric: str, values: torch.Tensor, first_seq: int) -> None:
        """values: (B,) or (B, H) -> one row per (sequence[, head])."""
        v = values.detach().to("cpu", torch.float64).reshape(values.shape[0], -1).numpy()
        B, H = v.shape
        per_head = values.ndim == 2
        self._rows.append(
            {
                "layer": np.full(B * H, t.layer),
                "module": np.full(B * H, t.name, dtype=object),
                "metric": np.full(B * H, metric, dtype=object),
                "head": np.tile(np.arange(H), B) if per_head else np.full(B, -1),
                "seq": np.repeat(np.arange(first_seq, first_seq + B), H),
                "value": v.reshape(-1),
            }
        )
        self._frame = None

    def _grad_hook(self, t: Target, first: int, mask: torch.Tensor | None):
        """A tensor hook: the backward metrics of dL/dX at this layer, from the gradient alone."""
        def hook(g: torch.Tensor) -> None:
            g = g.detach().reshape(-1, *g.shape[-2:])
            ms = None if mask is None else mask.to(g.device)
            self._add(t, "grad_norm", token_norm(g, ms), first)
            if self.keep_activations:
                self._gradients[t.layer].append(g.clone())
            self._add(t, "grad_cos_mean", layer_cos_mean(g, ms), first)

        return hook

    def record_backward(self, loss: torch.Tensor) -> None:
        """One backward pass of `loss` (autograd.grad: .grad buffers untouched): the stream hooks record
        dL/dX per layer, and the weight-gradient norms of the model's declared weights are added."""
        points = points_or_none(unwrap(self.model))
        params = [p for p in self.model.parameters() if p.requires_grad]  # all of them: every stream hook fires
        grads = dict(zip(map(id, params), torch.autograd.grad(loss, params, allow_unused=True)))
        for layer, name, metric, value in weight_grad_norms(points.weights if points is not None else [], grads):
            self._add(Target(layer, name, self.model), metric, torch.tensor([value]), 0)

    def _stream_hook(self, t: Target):
        def hook(x: torch.Tensor) -> None:
            if self.grad and x.requires_grad:
                n = x.reshape(-1, *x.shape[-2:]).shape[0]
                x.register_hook(self._grad_hook(t, self._seen[t.name], self._mask_for((n, x.shape[-2]), t.name)))
            x = x.detach()
            x = x.reshape(-1, *x.shape[-2:])
            mask = self._mask_for(x.shape[:-1], t.name)
            first = self._seen[t.name]
            self._seen[t.name] += x.shape[0]
            if self.outliers:  # pooled over the call's whole batch: one row per call, at its first sequence
                for name, v in outlier_stats(x, mask).items():
                    self._add(t, name, v.reshape(1), first)
            values, kernels = layer_metrics(x, mask, self.metric_names, self.keep_kernels)
            for name in self.metric_names:
                self._add(t, name, values[name], first)
            if kernels:
                self._kernels[t.layer].extend(K.cpu().numpy() for K in kernels)
            if self.keep_activations:
                self._activations[t.layer].append(x.clone())

        return hook

    def _softmax_hook(self, t: Target):
        def hook(A: torch.Tensor) -> None:
            mask = self._mask_for(A.shape[:1] + A.shape[-1:], t.name)
            first = self._seen[t.name]
            if self.outliers:
                self._add(t, "sink_share", sink_share(A.detach(), mask)[None], first)
            if not self.attention_on:
                self._seen[t.name] += A.shape[0]
                return
            ent = attention_entropy(A.detach())  # (B, H, T): entropy of each query row
            if mask is None:
                per_head = ent.mean(-1)
            else:
                m = mask[:, None, :].to(ent)
                per_head = (ent * m).sum(-1) / m.sum(-1).clamp_min(1)
            self._seen[t.name] += A.shape[0]
            self._add(t, "attn_entropy", per_head, first)
            self._add(t, "attn_entropy_ratio", entropy_ratio(A.detach(), mask), first)
            if A.shape[-1] <= SVD_MAX_T:
                self._add(t, "attn_sv_ratio", singular_ratio(A.detach()), first)

        return hook

    def _sdpa_sink(self, t: Target) -> PatternSink:
        """Records routed SDPA probabilities of t's block: call 1 of a forward as t (kept in `.attention`), a further
        call k of the same forward (cross-attention, a second attention) as '<t.name>#k', metrics only. Queries over
        other keys (cross-attention, L != S) record attn_entropy alone: key_mask and the T x T metrics do not apply."""
        hooks: dict[int, list] = {}

        def sink(A: torch.Tensor, k: int) -> None:
            if A.shape[-2] != A.shape[-1]:
                tk = t if k == 1 else dataclasses.replace(t, name=f"{t.name}#{k}")
                self._add(tk, "attn_entropy", attention_entropy(A.detach()).mean(-1), self._seen[tk.name])
                self._seen[tk.name] += A.shape[0]
                return
            if k not in hooks:
                tk = t if k == 1 else dataclasses.replace(t, name=f"{t.name}#{k}")
                hooks[k] = [self._softmax_hook(tk), *([self._pattern_hook(tk)] if k == 1 else [])]
            for hook in hooks[k]:
                hook(A)

        return sink

    def _pattern_hook(self, t: Target):
        def hook(full: torch.Tensor) -> None:
            full = full.detach()
            self._attention[t.layer].append((full.float() if full.dtype == torch.bfloat16 else full).cpu().numpy())

        return hook

    # -- results ----------------------------------------------------------------------------------
    @property
    def per_sequence(self) -> pd.DataFrame:
        """One row per (layer, module, metric, head, seq): the values before averaging over sequences."""
        if self._frame is None:
            cols = ("layer", "module", "metric", "head", "seq", "value")
            if self._rows:
                data = {c: np.concatenate([r[c] for r in self._rows]) for c in cols}
            else:
                data = {c: np.array([], dtype=object if c in ("module", "metric") else float) for c in cols}
            frame = pd.DataFrame(data)
            for c in ("layer", "head", "seq"):
                frame[c] = frame[c].astype(int)
            frame["module"] = frame["module"].astype(str)
            frame["metric"] = frame["metric"].astype(str)
            self._frame = frame.sort_values(["layer", "seq"], kind="stable").reset_index(drop=True)
        return self._frame

    @property
    def metrics(self) -> pd.DataFrame:
        """Tidy rows: layer (0 = embedding output), module, metric, head (-1 = not per head), value (mean over sequences)."""
        frame = self.per_sequence.groupby(["layer", "module", "metric", "head"], sort=False)["value"].mean()
        return frame.reset_index().sort_values("layer", kind="stable").reset_index(drop=True)

    @property
    def per_layer(self) -> pd.DataFrame:
        """`metrics` with one value per (layer, metric): per-head metrics (attn_entropy, sink_share) become their mean
        over heads, plus the largest head as `<metric>_max` (a single sink head is what the literature reports)."""
        m = self.metrics
        heads = m[m["head"] >= 0]
        keys = ["layer", "module", "metric"]
        mean = heads.groupby(keys, as_index=False, sort=False)["value"].mean()
        top = heads.groupby(keys, as_index=False, sort=False)["value"].max()
        top["metric"] = top["metric"] + "_max"
        return pd.concat([m[m["head"] == -1].drop(columns="head"), mean, top], ignore_index=True).sort_values("layer", kind="stable")

    @property
    def kernels(self) -> dict[int, np.ndarray]:
        """{layer: (B, T, T) float64 kernels} when kernels=True (padding included; see key_mask), else {}."""
        return {layer: np.concatenate(ks) for layer, ks in sorted(self._kernels.items())}

    @property
    def attention(self) -> dict[int, np.ndarray]:
        """{layer: (B, H, T, T) full attention matrices (after shaping)} when attention=True, else {}."""
        return {layer: np.concatenate(a) for layer, a in sorted(self._attention.items())}

    @property
    def activations(self) -> dict[int, torch.Tensor]:
        """{layer: (B, T, d) outputs} when activations=True, else {}."""
        return {layer: torch.cat(a) for layer, a in sorted(self._activations.items())}

    @property
    def gradients(self) -> dict[int, torch.Tensor]:
        """{layer: (B, T, d) dL/dX} when activations=True and grad=True, else {}."""
        return {layer: torch.cat(g) for layer, g in sorted(self._gradients.items())}

    def value(self, metric: str, layer: int | None = None, head: int = -1) -> float | pd.Series:
        """A metric's mean over sequences: one float for a layer, else a Series indexed by layer."""
        df = self.metrics
        df = df[(df.metric == metric) & (df["head"] == head)]
        if df.empty:
            raise SigpropError(f"probe recorded no {metric!r} (head {head}); recorded: {', '.join(sorted(self.metrics.metric.unique()))}")
        series = df.groupby("layer")["value"].mean()
        return float(series.loc[layer]) if layer is not None else series


def probe(
    model: nn.Module,
    layers: Layers = None,
    attention: bool = False,
    kernels: bool = False,
    activations: bool = False,
    metrics: Iterable[str] | str = DEFAULT_METRICS,
    key_mask: torch.Tensor | None = None,
    grad: bool = False,
    outliers: bool = False,
) -> Probe:
    """A context manager that records per-layer metrics of every forward run inside it.

    layers: None (model defaults), a glob/regex over module names ('transformer.h.*'), a list of
    modules/names, {layer: module}, or a glob over canonical probe points ('blocks.*.hook_attn_out').
    attention=True switches attention to a path that forms the T x T matrices (sigprop's explicit path,
    HF's eager implementation, TransformerLens's hook_pattern; any other model's F.scaled_dot_product_attention
    calls inside its blocks, see `sigprop.probes.sdpa`) for the `with` block only, keeps them in `.attention`
    and records per-head `attn_entropy` of the softmax probabilities.
    key_mask (B, T) bool (True = real token) restricts every metric to real tokens. grad=True also
    records dL/dX per layer (`grad_norm`, `grad_cos_mean`) when a backward pass runs inside the block
    (see `measure(..., grad=True)`). outliers=True also records the outlier-feature statistics of each layer
    (`sigprop.probes.metrics.outlier_stats`, pooled over each call's batch) and, where the model exposes attention
    probabilities, the per-head attention-sink share (`sink_share`).
    """
    return Probe(model, layers, attention, kernels, activations, metrics, key_mask, grad, outliers)


def measure(
    model: nn.Module,
    idx: torch.Tensor,
    layers: Layers = None,
    attention: bool = False,
    kernels: bool = False,
    activations: bool = False,
    metrics: Iterable[str] | str = DEFAULT_METRICS,
    key_mask: torch.Tensor | None = None,
    grad: bool = False,
    outliers: bool = False,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> Probe:
    """Run model(idx) once in eval mode under torch.no_grad() inside a probe; return the finished probe.

    grad=True runs the model's own loss (`lm_loss`) forward and backward instead, adding the backward
    metrics (`sigprop.probes.backward`): dL/dX per layer and the weight-gradient norms per block. loss_fn(model,
    idx) -> scalar loss replaces `lm_loss`'s guess of the loss (any model: an image classifier, a custom objective).
    key_mask is passed to a sigprop model as `key_mask=` and to other models as `attention_mask=`.
    Each module's train/eval mode is restored afterwards.
    """
    p = probe(model, layers, attention, kernels, activations, metrics, key_mask, grad, outliers)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.enable_grad() if grad else torch.no_grad(), p:
            if grad:
                p.record_backward(lm_loss(model, idx, key_mask, loss_fn))
            elif key_mask is None:
                model(idx)
            elif "key_mask" in inspect.signature(unwrap(model).forward).parameters:  # sigprop's models
                model(idx, key_mask=key_mask)
            else:
                model(idx, attention_mask=key_mask.long())
    finally:
        for m, training in modes.items():
            m.training = training
    return p
