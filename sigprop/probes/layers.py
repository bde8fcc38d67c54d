"""Which tensors a probe reads: the model's canonical stream points by default, or what `layers=` names.

`layers=` takes a glob over canonical probe points ('blocks.*.hook_mlp_out'), a glob or regex over module
names ('transformer.h.*'), a list of modules/names, or {layer: module or name}. torch.compile and DDP
wrappers are looked through.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from sigprop.errors import SigpropError
from sigprop.probes.points import _NAME, Point, ProbePoints, probe_points

Layers = str | Sequence[str | nn.Module] | Mapping[int, str | nn.Module] | None


@dataclass(frozen=True)
class Target:
    """One probed tensor: its layer number, name (canonical point or module name), the module, how to read it."""

    layer: int
    name: str
    module: nn.Module
    pre: bool = False  # the module's input (forward pre-hook), not its output
    index: int = 0  # element of a tuple output
    matched: str = "module"  # what the name is: "point" (a canonical probe point) or "module" (a module path)

    @classmethod
    def of(cls, point: Point) -> Target:
        return cls(point.layer, point.name, point.module, point.pre, point.index, "point")


# ------------------------------------------------------------------------------------------------
# Which modules are the layers
# ------------------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside torch.compile (`_orig_mod`) and DistributedDataParallel (`.module`) wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def default_layers(model: nn.Module) -> list[Target]:
    """Layer 0 = the stream entering the first block, layer l = the stream leaving block l (canonical points)."""
    return [Target.of(p) for p in probe_points(unwrap(model)).stream()]


def _pattern_regex(pattern: str) -> re.Pattern:
    """Glob over dotted names: '*' and '?' stay within one name part, '**' crosses dots."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    sub = {"**": ".*", "*": "[^.]*", "?": "[^.]"}
    return re.compile("".join(sub.get(p, re.escape(p)) for p in parts))


def points_or_none(model: nn.Module) -> ProbePoints | None:
    """The model's probe points, or None when it has none (then only explicit `layers=` work)."""
    try:
        return probe_points(model)
    except SigpropError:
        return None


def match_modules(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    """Submodules whose name matches a glob ('blocks.*') or, failing that, a regex (r'blocks\\.\\d+')."""
    named = [(n, m) for n, m in model.named_modules() if n]
    glob = _pattern_regex(pattern)
    found = [(n, m) for n, m in named if glob.fullmatch(n)]
    if not found:
        try:
            rx = re.compile(pattern)
        except re.error:
            rx = None
        found = [(n, m) for n, m in named if rx is not None and rx.fullmatch(n)]
    if not found:
        top = ", ".join(n for n, _ in named if "." not in n)
        raise SigpropError(f"no module of {type(model).__name__} matches layers={pattern!r}; top-level modules: {top}")
    return found


def _resolve_one(model: nn.Module, item: str | nn.Module, names: dict[int, str]) -> list[tuple[str, nn.Module]]:
    if isinstance(item, nn.Module):
        if id(item) not in names:
            raise SigpropError(f"layers: {type(item).__name__} module is not a submodule of {type(model).__name__}")
        return [(names[id(item)], item)]
    if isinstance(item, str):
        exact = dict(model.named_modules())
        return [(item, exact[item])] if item in exact and item else match_modules(model, item)
    raise SigpropError(f"layers: bad entry {item!r}; accepted: module names, patterns or nn.Module objects")


def _kind_prefix(layers: Layers) -> tuple[str | None, Layers]:
    """'point:<glob>' forces canonical probe points, 'module:<glob>' module paths; anything else is read as both."""
    if isinstance(layers, str):
        for kind in ("point", "module"):
            if layers.startswith(kind + ":"):
                return kind, layers[len(kind) + 1:]
    return None, layers


def resolve_layers(model: nn.Module, layers: Layers = None) -> list[Target]:
    """The probed modules with their layer numbers.

    Wrappers (torch.compile, DDP) are looked through, so names are those of the model inside.
    None -> `default_layers`. A pattern or list keeps the default numbering when every module is one of
    the model's default layers (so 'blocks.*' gives layers 1..L), else numbers them 0, 1, ... in order.
    A mapping {layer: module or name} sets the numbers explicitly. A name or glob over canonical point
    names ('blocks.*.hook_mlp_out') selects those points, with their own layer numbers; when the same glob read as
    module paths names other modules (a model whose own modules borrow canonical names) it is refused as
    ambiguous: 'point:<glob>' or 'module:<glob>' says which is meant. Each Target says which it is (`matched`), and
    a glob without prefix that reaches only module paths named like canonical points warns (one line) that they are
    read as modules.
    """
    model = unwrap(model)
    if layers is None:
        return default_layers(model)
    points = points_or_none(model)
    kind, layers = _kind_prefix(layers)
    if points is not None and isinstance(layers, str) and kind != "module":
        glob = _pattern_regex(layers)
        chosen = [Target.of(p) for p in points.points if glob.fullmatch(p.name)]
        if chosen:
            if kind is None:  # the same glob over module paths must mean the same modules, else it is ambiguous
                as_paths = {id(m) for n, m in model.named_modules() if n and glob.fullmatch(n)}
                if as_paths - {id(t.module) for t in chosen}:
                    raise SigpropError(f"layers={layers!r} matches canonical probe points and other modules by path; "
                                       f"accepted: 'point:{layers}' (the canonical points) or 'module:{layers}' (module paths)")
            return sorted(chosen, key=lambda t: t.layer)
        if kind == "point":
            raise SigpropError(f"layers='point:{layers}' matches no canonical probe point of {type(model).__name__}; "
                               f"accepted: names such as {points.points[0].name!r}")
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(layers, Mapping):
        out = []
        for layer, item in layers.items():
            (name, module), *rest = _resolve_one(model, item, names)
            if rest:
                raise SigpropError(f"layers: {item!r} matches {len(rest) + 1} modules; a mapping needs one each")
            out.append(Target(int(layer), name, module))
        return sorted(out, key=lambda t: t.layer)
    items = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not items:
        raise SigpropError("layers is empty; accepted: None, a name pattern, a list of modules/names, {layer: module}")
    found = list({id(m): (n, m) for item in items for n, m in _resolve_one(model, item, names)}.values())
    lookalike = [n for n, _ in found if _NAME.fullmatch(n)]
    if kind is None and isinstance(layers, str) and lookalike:  # e.g. TransformerLens-style hook modules of a model sigprop reads otherwise
        warnings.warn(f"layers={layers!r} matched module paths named like canonical probe points ({lookalike[0]!r}, ...), "
                      f"read as modules (Probe.matched == 'module'); write 'module:<glob>' to mean that, or 'point:<glob>' "
                      "for canonical points", stacklevel=3)
    known = {id(p.module): p.layer for p in points.stream() if not p.pre} if points is not None else {}
    if all(id(m) in known for _, m in found):
        return sorted((Target(known[id(m)], n, m) for n, m in found), key=lambda t: t.layer)
    return [Target(i, n, m) for i, (n, m) in enumerate(found)]
