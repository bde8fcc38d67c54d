"""The house (issue 26): no import circles between sigprop's modules (nested imports counted too), and the lower
rooms import nothing from the higher ones: blocks and probes know nothing of theory, training, recipes, studies or
the CLI; probes treat sigprop's models like anyone else's (no blocks import); plots read data, never run studies."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sigprop"
#: room -> sigprop modules it may not import (prefix match)
FORBIDDEN = {
    "sigprop.kernels": ("sigprop.blocks", "sigprop.studies", "sigprop.training", "sigprop.recipes", "sigprop.cli", "sigprop.plots",
                        "sigprop.perf"),
    "sigprop.blocks": ("sigprop.probes", "sigprop.studies", "sigprop.training", "sigprop.recipes", "sigprop.cli", "sigprop.plots",
                       "sigprop.perf"),
    "sigprop.probes": ("sigprop.blocks", "sigprop.studies", "sigprop.training", "sigprop.recipes", "sigprop.cli", "sigprop.plots",
                       "sigprop.perf"),
    "sigprop.plots": ("sigprop.studies", "sigprop.recipes", "sigprop.training", "sigprop.cli", "sigprop.perf"),
    "sigprop.perf": ("sigprop.studies", "sigprop.training", "sigprop.recipes", "sigprop.cli"),
    "sigprop.studies": ("sigprop.recipes", "sigprop.cli"),
    "sigprop.training": ("sigprop.recipes", "sigprop.cli"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the sigprop modules it imports anywhere in its body (a `from pkg import name` counts pkg.name when
    that is a module)."""
    files = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    out = {}
    for mod, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sigprop"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("sigprop")}
        out[mod] = {d for d in deps if d in files and d != mod and not mod.startswith(d + ".")}
    return out


def test_no_import_circles():
    graph = imports()
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    g = {m: deps - packages for m, deps in graph.items() if m not in packages}  # a package's __init__ only re-exports
    cycles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_lower_rooms_import_nothing_from_higher_ones():
    bad = [(m, d) for m, deps in imports().items() for room, banned in FORBIDDEN.items() if m.startswith(room)
           for d in deps if d.startswith(banned)]
    assert not bad, bad


def test_imports_sit_at_the_top():
    """sigprop's own modules are imported at the top of a module; only the CLI defers them (a fast `sigprop --help`),
    and elsewhere only the figures (matplotlib) and the recipe registry, which a caller may never need."""
    deferred = []
    for f in PACKAGE.rglob("*.py"):
        if f.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(node):
                    if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("sigprop") and \
                            not n.module.startswith(("sigprop.plots", "sigprop.recipes")):
                        deferred.append(f"{f.relative_to(PACKAGE)}:{n.lineno} {n.module}")
    assert not deferred, deferred
