"""The floor plan holds: imports run down the layers (docs/architecture.md), with no circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Lowest first. A module may import from its own layer or a lower one.
LAYERS = (
    ("latprof.errors", "latprof.env", "latprof.spec", "latprof.plots"),
    ("latprof.models", "latprof.kernels"),
    ("latprof.tables",),
    ("latprof.staircase",),
    ("latprof.measure",),
    ("latprof.search",),
    ("latprof.train",),
    ("latprof.prune",),
    ("latprof.cli", "latprof.__main__"),
)
PACKAGE_DIRS = {"latprof": ROOT / "latprof", "latprof.kernels": ROOT / "kernels", "latprof.search": ROOT / "search"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every latprof module `path` imports, at the top or inside functions."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` imports the module, not only pkg
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m == "latprof" or m.startswith("latprof.")}


def _layer(module: str) -> int | None:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return None if best is None else best[0]


GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "latprof" and _layer(m) is None] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_layers(name):
    if name == "latprof":
        return
    up = [m for m in GRAPH[name] if m != "latprof" and _layer(m) > _layer(name)]
    assert up == [], f"{name} imports from a higher layer: {up}"


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in GRAPH[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])


def test_modules_stay_small():
    """One concept per module: none over 450 lines (STYLE.md: about 300, split past 500)."""
    big = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 450}
    assert big == {}
