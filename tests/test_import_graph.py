"""No import cycle between moe_studio modules, and the layers of DESIGN.md import only
downwards.

The graph is read from the source (``ast``), not from ``sys.modules``: an import
inside a function is a dependency too, and a cycle hidden in one breaks as soon as
someone moves it to the top of a file. Imports under ``if TYPE_CHECKING:`` never run,
so they make no cycle; they still count for the layers (an annotation naming a class
of a higher layer is a dependency on it). Run as a script, it prints every cycle
(``python tests/test_import_graph.py``).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "moe_studio"

# Which top-level parts of moe_studio each part may import (DESIGN.md's layer table;
# the parts not listed here, gui, bench, the CLI, are the top and may import anything).
# metrics reads the byte vocabulary's token classes from data (both numpy only). config
# is the bottom: the one home of ConfigError and of the checks of user-typed paths and
# numbers, which paths (the runs folder) and the store's CLI (export targets) use to
# refuse bad input in the same one-line form as every other command.
LAYERS = {
    "config": set(),
    "data": set(),
    "metrics": {"data"},
    "paths": {"config"},
    "store": {"config", "metrics", "paths"},
    "engine": {"config", "data", "metrics", "paths", "store"},
}


# Cycles still to remove (none): the list may only shrink; a new cycle fails.
KNOWN_CYCLES: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside ``mod``."""
    if level == 0:
        return target or ""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, typing: bool):
    """Every Import / ImportFrom node, those under ``if TYPE_CHECKING:`` only when
    ``typing``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test) and not typing:
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = ROOT, typing: bool = False) -> dict[str, set[str]]:
    """``{module: {moe_studio modules it imports}}`` over every .py file under ``root``
    (with the ``if TYPE_CHECKING:`` imports when ``typing``). ``from pkg import name``
    counts as importing ``pkg.name`` where that is a module."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), typing):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in files else base)
            for t in targets:
                # ``import a.b.c`` depends on a.b.c; keep the longest known prefix
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted:
    every import cycle lies inside one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        # iterative DFS: recursion depth would follow the longest import chain
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _part(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        allowed = LAYERS.get(_part(mod))
        if allowed is None:
            continue
        for d in sorted(deps):
            p = _part(d)
            if p and p != _part(mod) and p not in allowed:
                bad.append(f"{mod} imports {d}")
    return bad


# ------------------------------------------------------------------------------ tests

def test_the_graph_finds_a_planted_cycle(tmp_path):
    """The detector itself: a cycle through a function-level import and one through a
    package's ``from . import`` are both found; a one-way import is not a cycle, nor
    is one closed only by an ``if TYPE_CHECKING:`` import."""
    pkg = tmp_path / "moe_studio"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    (pkg / "c.py").write_text("import moe_studio.a\n")
    (pkg / "sub" / "__init__.py").write_text("from . import x\n")
    (pkg / "sub" / "x.py").write_text("from ..sub import y\n")
    (pkg / "sub" / "y.py").write_text("from moe_studio.sub import x\n")
    (pkg / "d.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from .e import E\n")
    (pkg / "e.py").write_text("from .d import D\n")
    assert ["moe_studio.d", "moe_studio.e"] in cycles(import_graph(pkg, typing=True))
    g = import_graph(pkg)
    assert g["moe_studio.c"] == {"moe_studio.a"}
    assert g["moe_studio.sub"] == {"moe_studio.sub.x"}
    assert cycles(g) == [["moe_studio.a", "moe_studio.b"],
                         ["moe_studio.sub.x", "moe_studio.sub.y"]]


def test_no_import_cycle_between_moe_studio_modules():
    found = {tuple(c) for c in cycles(import_graph())}
    new = sorted(found - KNOWN_CYCLES)
    assert not new, "import cycles: " + "; ".join(" <-> ".join(c) for c in new)
    gone = sorted(KNOWN_CYCLES - found)
    assert not gone, ("these cycles are gone, take them off KNOWN_CYCLES: "
                      + "; ".join(" <-> ".join(c) for c in gone))


def unresolved_imports(root: Path = ROOT) -> list[str]:
    """``from .x import y`` inside moe_studio whose module is not there: an import in a
    function fails only when that function runs (a file moved to a sub-package keeps
    ``..engine`` that used to mean ``moe_studio.engine``)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    packages = {module_name(p, root) for p in root.rglob("__init__.py")}
    bad = []
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), True):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = _resolve(mod, is_pkg, node.level, node.module)
                if base not in files and base not in packages:
                    bad.append(f"{path.relative_to(root.parent)}:{node.lineno} imports {base}, "
                               f"which does not exist")
    return bad


def test_every_relative_import_names_a_module_that_exists(tmp_path):
    pkg = tmp_path / "moe_studio"
    (pkg / "gui" / "views").mkdir(parents=True)
    for d in (pkg, pkg / "gui", pkg / "gui" / "views"):
        (d / "__init__.py").write_text("")
    (pkg / "engine.py").write_text("")
    (pkg / "gui" / "views" / "v.py").write_text(
        "from ...engine import x\n\ndef f():\n    from ..engine import y\n")
    assert unresolved_imports(pkg) == [
        "moe_studio/gui/views/v.py:4 imports moe_studio.gui.engine, which does not exist"]
    assert not unresolved_imports(), "\n".join(unresolved_imports())


def test_layers_import_only_downwards():
    bad = layer_violations(import_graph(typing=True))
    assert not bad, "\n".join(bad)



QT_PACKAGES = frozenset({"PySide6", "shiboken6", "pyqtgraph"})


def external_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: top-level packages outside moe_studio it imports at run time}`` (an
    import under ``if TYPE_CHECKING:`` never runs, so it is left out)."""
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        found = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), False):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        out[module_name(path, root)] = found - {root.name}
    return out


def view_readers_importing_qt(root: Path = ROOT) -> list[str]:
    """The views' data readers (``gui/views/*_data.py``) that import Qt, directly or
    through any moe_studio module (or package ``__init__``) they import: each as "reader -> ... -> module imports
    PySide6". A reader is what a view shows, read from the store; it is tested without a
    QApplication and must stay usable without one."""
    graph = import_graph(root)
    ext = external_imports(root)
    bad = []
    for reader in sorted(m for m in graph if (m.startswith(f"{root.name}.gui.views.")
                                              and m.endswith("_data"))
                         or m == f"{root.name}.gui.run.polling"):   # what readers poll with
        seen, todo = {reader: [reader]}, [reader]
        while todo:       # breadth first: the shortest chain to each module
            mod = todo.pop(0)
            qt = sorted(ext.get(mod, set()) & QT_PACKAGES)
            if qt:
                bad.append(" -> ".join(seen[mod]) + f" imports {', '.join(qt)}")
            # importing a module runs its packages' __init__ first
            parents = {mod.rsplit(".", k)[0] for k in range(1, mod.count(".") + 1)}
            for dep in sorted(graph[mod] | (parents & graph.keys())):
                if dep not in seen:
                    seen[dep] = seen[mod] + [dep]
                    todo.append(dep)
    return bad


def test_view_data_readers_import_no_qt(tmp_path):
    """The rule finds Qt one import away (a planted reader that imports a widget), not
    under ``if TYPE_CHECKING:``; the real readers import none."""
    views = tmp_path / "moe_studio" / "gui" / "views"
    views.mkdir(parents=True)
    for d in (views.parents[1], views.parent, views):
        (d / "__init__.py").write_text("")
    (views / "w.py").write_text("import pyqtgraph as pg\n")
    (views.parent / "theme.py").write_text("from PySide6.QtGui import QColor\n")
    (views / "a_data.py").write_text("import numpy as np\nfrom .w import pg\n")
    (views / "b_data.py").write_text("from typing import TYPE_CHECKING\n"
                                     "if TYPE_CHECKING:\n    from PySide6.QtCore import QObject\n")
    assert view_readers_importing_qt(tmp_path / "moe_studio") == [
        "moe_studio.gui.views.a_data -> moe_studio.gui.views.w imports pyqtgraph"]
    (views.parent / "__init__.py").write_text("from . import theme\n")   # a package's own
    assert view_readers_importing_qt(tmp_path / "moe_studio") == [
        "moe_studio.gui.views.a_data -> moe_studio.gui.views.w imports pyqtgraph",
        "moe_studio.gui.views.a_data -> moe_studio.gui -> moe_studio.gui.theme imports PySide6",
        "moe_studio.gui.views.b_data -> moe_studio.gui -> moe_studio.gui.theme imports PySide6"]
    readers = [m for m in import_graph() if m.startswith("moe_studio.gui.views.")
               and m.endswith("_data")]
    assert len(readers) >= 4, readers
    bad = view_readers_importing_qt()
    assert not bad, "\n".join(bad)


def test_what_the_gui_process_imports_from_the_engine_loads_no_torch():
    """The window never pays torch's import: the training loop it drives the child
    through, and the checkpoint listing of the custom probe, import neither torch nor Qt."""
    code = ("import sys, moe_studio.engine.loop, moe_studio.engine.probe\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'PySide6'})\n"
            "assert not bad, bad\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


if __name__ == "__main__":
    g = import_graph()
    found = cycles(g)
    for c in found:
        print("cycle:", " <-> ".join(c))
    for b in layer_violations(import_graph(typing=True)):
        print("layer:", b)
    print(f"{len(g)} modules, {sum(map(len, g.values()))} imports, {len(found)} cycles")
    sys.exit(1 if found else 0)
