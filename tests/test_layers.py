"""The layout's rule, read from the code's imports (ast), so it cannot silently rot.

Layers, lowest first (DESIGN.md): a package of `stream` imports only from its
own layer and those below; `nodes` imports only `stream.core`; no module
imports one that (directly or not) imports it back. Imports under
`if TYPE_CHECKING:` are annotations, not dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

LAYERS = ["stream.core", "nodes", "stream.wire", "stream.store", "stream.sources",
          "stream.config", "stream.run", "stream.service", "stream.offline", "stream.maps",
          "stream.cli"]
MAX_LINES = 400
# numba kernel files: one kernel family each, kept whole so its variants stay side by side
KERNEL_FILES = {"nodes/kernels/dense.py", "nodes/kernels/csr.py", "nodes/kernels/bslz4.py"}


def modules() -> dict[str, Path]:
    found = {}
    for top in ("stream", "nodes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports at run time (lazy imports in functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known}


def layer(name: str) -> int | None:
    for i, prefix in enumerate(LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return i
    return None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) - {name} for name, path in known.items()}


def test_every_module_has_a_layer():
    loose = [m for m in modules() if layer(m) is None and m not in ("stream", "nodes")]
    assert not loose, f"modules outside every layer: {loose}"


def test_no_import_runs_up_a_layer():
    wrong = []
    for name, deps in graph().items():
        mine = layer(name)
        for dep in deps:
            theirs = layer(dep)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports that run up a layer:\n" + "\n".join(sorted(wrong))


def test_nodes_import_only_stream_core():
    wrong = [f"{name} -> {dep}" for name, deps in graph().items() if name.startswith("nodes")
             for dep in deps if dep.startswith("stream") and layer(dep) != 0]
    assert not wrong, "nodes may use stream.core only:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    g = graph()
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g[node]):
            if dep in ("stream", "nodes"):
                continue  # the packages' faces (version, the node registry)
            if state.get(dep) == 1:
                circles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            walk(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_modules_stay_small():
    big = []
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in KERNEL_FILES:
            big.append(f"{rel}: {n} lines")
    assert not big, f"modules over {MAX_LINES} lines:\n" + "\n".join(sorted(big))


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: a module that imports a higher layer is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from stream.cli.main import main\n")
    known = modules()
    deps = imports("stream.core.bad", bad, known)
    assert "stream.cli.main" in deps and layer("stream.cli.main") > layer("stream.core.bad")
