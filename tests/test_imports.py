"""The package's import graph: no cycles between qpeft modules, none between its packages, and
the layers point down.

Every module under src/qpeft is parsed with ``ast``; every import in it (module level and
inside functions, ``TYPE_CHECKING`` blocks included) becomes an edge to the qpeft module it
names: ``from qpeft.x import y`` is an edge to ``qpeft.x.y`` when that is a module, else to
``qpeft.x``. Importing ``qpeft.x.y`` runs ``qpeft/x/__init__.py`` first, so an import is
also an edge to each package above its target, except the importer's own packages (those
are already importing when it runs).

Packages must not tangle either, even where their modules do not: in the graph of a package's
direct children (each sub-package collapsed into one node), ``qpeft.backends -> qpeft.devices
-> qpeft.backends`` is a cycle whichever modules carry the two edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import qpeft

SRC = Path(qpeft.__file__).resolve().parent.parent
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "qpeft").rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The qpeft modules that the file at ``path`` (module ``name``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import qpeft.x.y` as a name inside a module
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target in imported(path, name, known):
            parts = target.split(".")
            edges |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
        # A module's own packages are already importing when it runs: not edges.
        parts = name.split(".")
        graph[name] = edges - {".".join(parts[:k]) for k in range(1, len(parts) + 1)}
    return graph


def children_graph(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The import graph between the direct children of ``package`` (modules and sub-packages,
    each sub-package with everything under it as one node)."""
    prefix = package + "."

    def child(name: str) -> str | None:
        if not name.startswith(prefix):
            return None
        return prefix + name[len(prefix) :].split(".")[0]

    out: dict[str, set[str]] = {}
    for name, deps in graph.items():
        a = child(name)
        if a is None:
            continue
        out.setdefault(a, set())
        out[a] |= {b for b in map(child, deps) if b is not None and b != a}
    return out


def packages(graph: dict[str, set[str]]) -> list[str]:
    """Every package among the modules (a name that is the prefix of another)."""
    return sorted({name.rpartition(".")[0] for name in graph if "." in name})


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan): each is a set
    of modules that all reach each other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path ``a -> b -> ... -> a`` inside each tangle."""
    return [_cycle_in(graph, c) for c in tangles(graph)]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first)."""
    start = min(component)
    parents = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in its component")


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "qpeft" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from qpeft.sub import b\n    from . import c\n")
    known = {"qpeft", "qpeft.sub", "qpeft.sub.a", "qpeft.sub.b", "qpeft.sub.c"}
    assert imported(pkg / "a.py", "qpeft.sub.a", known) == {"qpeft.sub.b", "qpeft.sub.c"}


def test_cycle_finder_reports_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_qpeft_modules():
    graph = import_graph()
    report = [f"{' -> '.join(_cycle_in(graph, t))}   (tangled: {', '.join(sorted(t))})" for t in tangles(graph)]
    assert not report, "import cycles between qpeft modules:\n" + "\n".join(report)


def test_children_graph_collapses_sub_packages():
    graph = {
        "qpeft.a.x": {"qpeft.b.y"},
        "qpeft.b.y": set(),
        "qpeft.b.z": {"qpeft.a.w"},
        "qpeft.a.w": set(),
        "qpeft.c": {"qpeft.a.x"},
    }
    assert children_graph(graph, "qpeft") == {"qpeft.a": {"qpeft.b"}, "qpeft.b": {"qpeft.a"}, "qpeft.c": {"qpeft.a"}}
    assert tangles(graph) == []  # no module cycle ...
    assert find_cycles(children_graph(graph, "qpeft")) == [["qpeft.a", "qpeft.b", "qpeft.a"]]  # ... but a package one
    assert packages(graph) == ["qpeft", "qpeft.a", "qpeft.b"]


def test_no_import_cycles_between_qpeft_packages():
    graph = import_graph()
    report = []
    for package in packages(graph):
        children = children_graph(graph, package)
        report += [f"{' -> '.join(_cycle_in(children, t))}   (in {package})" for t in tangles(children)]
    assert not report, "import cycles between qpeft packages:\n" + "\n".join(report)


def test_quantum_imports_nothing_else_from_qpeft():
    graph = import_graph()
    outside = {
        (name, dep)
        for name, deps in graph.items()
        if name.startswith("qpeft.quantum")
        for dep in deps
        if dep not in ("qpeft", "qpeft.quantum") and not dep.startswith("qpeft.quantum.")
    }
    assert not outside, f"qpeft.quantum must import only itself (DESIGN.md section 1): {sorted(outside)}"


def test_simulator_benchmark_does_not_import_the_training_stack():
    script = BENCHMARKS / "simulator.py"
    code = (
        f"import runpy, sys\nsys.argv = [{str(script)!r}, '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'peft', 'accelerate')"
        " or m in ('qpeft.train', 'qpeft.adapters', 'qpeft.models')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
