"""The package's import structure: every module imports on its own, no
module imports itself back through others, and the layers import only
downwards (``../shared/DESIGN.md``: runtime -> sync -> mm -> check/sim ->
api, and the outer rooms above).

The graph is read from the source with ``ast`` (every ``import`` and
``from ... import``, at module level or inside a function: a lazy import
is still a dependency; only ``if TYPE_CHECKING:`` blocks are left out, they
never run).  A package's ``__init__`` counts only when it is named
(``from specfault.check import Scenario``), not for each of its modules.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "specfault"


def _modules(root: pathlib.Path = PKG) -> dict[str, tuple[pathlib.Path, bool]]:
    """module name -> (file, is a package's __init__)."""
    mods: dict[str, tuple[pathlib.Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        ispkg = parts[-1] == "__init__"
        if ispkg:
            parts.pop()
        mods[".".join(parts)] = (path, ispkg)
    return mods


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if _type_checking_only(node):
            todo.extend(node.orelse)            # type: ignore[attr-defined]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def import_graph(root: pathlib.Path = PKG) -> dict[str, set[str]]:
    """module -> the modules of ours it imports."""
    mods = _modules(root)
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, (path, ispkg) in mods.items():
        pkg = name if ispkg else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import submodule`` imports the submodule
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod
                           for a in node.names]
            for t in targets:
                if t != top and not t.startswith(top + "."):
                    continue
                while t not in mods:
                    t = t.rpartition(".")[0]
                if t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports (``[a, b, ..., a]``), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        color[m] = GREY
        stack.append(m)
        for d in sorted(graph[m]):
            if color[d] == GREY:
                return stack[stack.index(d):] + [d]
            if color[d] == WHITE:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(graph):
        if color[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


# ------------------------------------------------------------------ layers
def layer(module: str) -> str:
    """The layer of a module: its top-level folder or module under
    ``specfault``; the package itself and ``api`` are the facade."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "api":
        return "api"
    return parts[1]


_BASE = {"config", "constants", "errors"}          # foundation modules
#: layer -> the layers it may import (its own always)
ALLOWED: dict[str, set[str]] = {
    "runtime": set(),
    "constants": set(),
    "config": set(),
    "errors": {"constants", "runtime"},
    "sync": {"runtime"},
    "mm": {"runtime", "sync"} | _BASE,
    "check": {"runtime", "sync", "mm"} | _BASE,
    "sim": {"runtime", "sync", "mm"} | _BASE,
    "api": {"runtime", "sync", "mm"} | _BASE,
}
#: the outer rooms (DESIGN.md): anything below them
OUTER = {"oracle", "report", "cli", "cliargs", "knobs_cli", "trace"}
#: module-level exceptions to ALLOWED, each with its reason
EXCEPTIONS: dict[tuple[str, str], str] = {
    # the scenarios and workloads build their machines with the public
    # facade (sf.Machine, Process.mmap ...), as a user would
    ("specfault.check.scenarios.base", "api"): "builds machines with sf.Machine",
    ("specfault.check.scenarios.races", "api"): "builds machines with sf.Machine",
    ("specfault.check.scenarios.pressure", "api"): "builds machines with sf.Machine",
    ("specfault.check.scenarios.truncation", "api"): "builds machines with sf.Machine",
    ("specfault.check.scenarios.tables", "api"): "builds machines with sf.Machine",
    ("specfault.check.scenarios.thp", "api"): "builds machines with sf.Machine",
    ("specfault.sim.workloads", "api"): "builds machines with sf.Machine",
    # the Trace Event writer is a file format with no imports of ours; the
    # simulator's observer and bench's run loop write through it
    ("specfault.sim.trace", "report.perfetto"): "writes the Trace Event format",
    ("specfault.sim.bench", "report.perfetto"): "writes the Trace Event format",
    # Machine.check() runs check_mm, which lives with the other invariants
    ("specfault.api", "check.invariants"): "Machine.check() runs check_mm",
}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in sorted(graph.items()):
        lm = layer(m)
        if lm in OUTER or m.endswith(".cli"):
            continue          # a package's command line is an outer room too
        for d in sorted(deps):
            ld = layer(d)
            if ld == lm or ld in ALLOWED.get(lm, set()):
                continue
            key = d.partition(".")[2] if ld != "api" else "api"
            if (m, key) in EXCEPTIONS:
                continue
            bad.append(f"{m} ({lm}) imports {d} ({ld})")
    return bad


def test_import_graph_sees_every_kind_of_import(tmp_path: pathlib.Path) -> None:
    """The graph builder itself: absolute, relative, from-package-import-
    module and lazy imports count; TYPE_CHECKING ones do not."""
    pkg = tmp_path / "specfault"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from specfault.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text(textwrap.dedent("""\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from specfault import a
        import specfault.d
    """))
    (pkg / "d.py").write_text("import os\n")
    g = import_graph(pkg)
    assert g["specfault.a"] == {"specfault.sub.b"}
    assert g["specfault.sub.b"] == {"specfault.sub.c"}
    assert g["specfault.sub.c"] == {"specfault.d"}
    assert find_cycle(g) is None
    (pkg / "d.py").write_text("from specfault.a import x\n")
    assert find_cycle(import_graph(pkg)) == [
        "specfault.a", "specfault.sub.b", "specfault.sub.c", "specfault.d", "specfault.a"]


def test_no_import_cycle() -> None:
    """No module imports itself back through others (check/linearizability
    and check/scenarios/base did: the search now takes the sequential
    model's functions as arguments)."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_import_only_downwards() -> None:
    assert layering_violations(import_graph()) == []


def test_layering_check_catches_an_upward_import() -> None:
    g = import_graph()
    g["specfault.sync.rwsem"] = g["specfault.sync.rwsem"] | {"specfault.mm.vma"}
    g["specfault.runtime.ops"] = g["specfault.runtime.ops"] | {"specfault.sync.rcu"}
    g["specfault.check.engine"] = g["specfault.check.engine"] | {"specfault.sim.engine"}
    assert layering_violations(g) == [
        "specfault.check.engine (check) imports specfault.sim.engine (sim)",
        "specfault.runtime.ops (runtime) imports specfault.sync.rcu (sync)",
        "specfault.sync.rwsem (sync) imports specfault.mm.vma (mm)",
    ]


_ISOLATED = textwrap.dedent("""\
    import importlib, os, sys, traceback
    bad = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:                 # a child that has imported nothing of ours
            code = 0
            try:
                importlib.import_module(name)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        if os.waitpid(pid, 0)[1] != 0:
            bad.append(name)
    print("FAILED:", " ".join(bad))
    sys.exit(1 if bad else 0)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_every_module_imports_alone() -> None:
    """Each module of the package imported first, in an interpreter that
    has imported nothing of ours (one fresh interpreter, forked per module:
    the same as ``python -c "import specfault.check.linearizability"`` for
    every module, faster).  An import cycle that only bites in one order
    fails here."""
    names = sorted(_modules())
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", _ISOLATED, *names], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip() == "FAILED:"


def test_the_trace_event_writer_imports_nothing_of_ours() -> None:
    """The one outer module the simulator may import (EXCEPTIONS) stays a
    plain file-format writer."""
    assert import_graph()["specfault.report.perfetto"] == set()
