"""The layout of the package, as docs/architecture.md describes it: layers, no import cycles, rooms of a readable size.

Layers, lowest first (a module imports only from its own layer or lower ones):

    core (errors, registry, files, version) < data < models (backbones, heads) < run < infer < evaluate < train
        < workflows < cli < the package's face (facesphere/__init__.py)

infer, evaluate and train are one tier in docs/architecture.md, ordered so that evaluation can use the inference
embedders and detectors, and training's validation the evaluation protocols, never the other way round. Imports inside
functions count too (optional third-party packages are not facesphere modules and are not checked).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import facesphere

PACKAGE = Path(facesphere.__file__).resolve().parent
LAYERS = ["core", "data", "models", "run", "infer", "evaluate", "train", "workflows", "cli", "face"]
CORE = {"errors", "registry", "files", "version"}
MAX_LINES = 800
#: old import paths kept for one release as thin re-exports (they import downwards from where they stand)
DEPRECATED = {"facesphere.metrics", "facesphere.cleaning", "facesphere.inversion", "facesphere.infer.models",
              "facesphere.infer.mtcnn", "facesphere.train.config", "facesphere.train.checkpoint",
              "facesphere.evaluate.search"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or module in DEPRECATED and len(parts) == 2:
        return "face"
    top = parts[1]
    if top in CORE:
        return "core"
    if top in ("backbones", "heads"):
        return "models"
    return top


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The facesphere modules an ``ImportFrom`` reaches (``from . import x`` may name sub-modules)."""
    if node.level == 0:
        base = node.module or ""
    else:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _imports() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                candidates = _resolve(module, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != module)
        graph[module] = targets
    return graph


def test_layers_are_only_imported_downwards():
    wrong = []
    for module, targets in _imports().items():
        mine = LAYERS.index(_layer(module))
        for target in targets:
            if LAYERS.index(_layer(target)) > mine:
                wrong.append(f"{module} ({_layer(module)}) -> {target} ({_layer(target)})")
    assert not wrong, "imports from a lower layer into a higher one:\n" + "\n".join(sorted(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_between_files():
    graph = _imports()
    # a package's face importing its own modules is how a package exports; a cycle through it is still a cycle
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        mine = _layer(module) if _layer(module) in ("core", "face") else module.split(".")[1]
        for target in targets:
            theirs = _layer(target) if _layer(target) in ("core", "face") else target.split(".")[1]
            if theirs != mine:
                graph.setdefault(mine, set()).add(theirs)
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(_modules()))
def test_rooms_of_a_readable_size(module):
    lines = _modules()[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines (split it along its concerns)"


def test_user_errors_live_in_errors_and_are_exported():
    errors = (PACKAGE / "errors.py").read_text(encoding="utf-8")
    defined_elsewhere = []
    for module, path in _modules().items():
        if module == "facesphere.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id.endswith("Error") for b in node.bases):
                defined_elsewhere.append(f"{module}.{node.name}")
    assert not defined_elsewhere, defined_elsewhere
    for name in [n.name for n in ast.parse(errors).body if isinstance(n, ast.ClassDef)]:
        assert getattr(facesphere, name) is not None, f"facesphere does not export {name}"


@pytest.mark.parametrize("module", sorted(DEPRECATED))
def test_deprecated_paths_still_import_and_say_where_to(module):
    import importlib
    import sys

    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match="moved to facesphere"):
        importlib.import_module(module)
