"""The package as a whole (``maml_jax/__init__.py``): its flat API, and the import graph of
its modules, which must stay free of cycles (each module one concept, layered)."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import maml_jax as mj

PACKAGE = pathlib.Path(mj.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The maml_jax modules a file imports, anywhere in it (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from maml_jax import meta" names a module; "from maml_jax.meta import x" not
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the library modules it imports (the package ``maml_jax`` itself left out:
    every submodule is reachable from it by design)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _library_imports(path, modules) - {name, "maml_jax"}
            for name, path in files.items() if name != "maml_jax"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    assert {"maml_jax.core", "maml_jax.meta", "maml_jax.parallel",
            "maml_jax.task_batching"} <= set(graph)
    assert find_cycle(graph) is None, find_cycle(graph)
    # the layering the modules' docstrings describe
    assert graph["maml_jax.core"] == set()
    assert graph["maml_jax.task_batching"] == set()
    assert "maml_jax.parallel" not in graph["maml_jax.meta"]


def test_every_public_name_resolves_and_comes_from_one_module():
    for name in mj.__all__:
        obj = getattr(mj, name)
        module = getattr(obj, "__module__", None)
        if module and module.startswith("maml_jax."):
            # the name is defined (or, for jit-wrapped functions, documented) where the
            # flat API takes it from, and that module lists it in its own __all__
            assert name in importlib.import_module(module).__all__, (name, module)


def test_importing_the_library_imports_no_torch_or_tensorflow():
    code = ("import sys, maml_jax; "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
