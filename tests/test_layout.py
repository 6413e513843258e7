"""The package's floors: core (``steerlab/*.py``) never imports ``steerlab.study`` or
``steerlab.lab``; study never imports lab; no import cycle anywhere in ``lib/`` (core, study, lab, and
between them). Parsed from the source, so a lazy import inside a function, one under ``TYPE_CHECKING``
and an absolute ``from steerlab import lab`` count too. Every module says what it is for in its first
lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lib" / "steerlab"


def _floor(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else "core"


def _imported(path: Path, source: str | None = None) -> set[str]:
    """Absolute dotted names of the steerlab modules a file imports (``source``: its text, if not on disk)."""
    tree = ast.parse(path.read_text() if source is None else source)
    package = ["steerlab", *path.relative_to(PKG).parts[:-1]]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
                if not node.module:
                    names.update(".".join([*base, a.name]) for a in node.names)
            elif node.module:
                names.add(node.module)
                # ``from steerlab import lab`` / ``from steerlab.study import compare``: the names may be modules
                names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "steerlab" or n.startswith("steerlab.")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["steerlab", *parts])


FORBIDDEN = {"core": ("steerlab.study", "steerlab.lab"), "study": ("steerlab.lab",), "lab": ()}
MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_floors(path: Path) -> None:
    bad = [n for n in _imported(path) for f in FORBIDDEN[_floor(path)] if n == f or n.startswith(f + ".")]
    assert not bad, f"{path.relative_to(PKG)} ({_floor(path)}) imports {bad}"


def test_the_saved_cells_key_leaves_out_only_a_floor_nothing_else_imports() -> None:
    """``steerlab.study.cells.source_digest`` ignores the subpackages in ``PRESENTATION``: sound only while
    every other floor is forbidden to import them, which :func:`test_floors` then enforces."""
    from steerlab.study.cells import PRESENTATION

    assert PRESENTATION
    for name in PRESENTATION:
        assert (PKG / name).is_dir()
        assert all(f"steerlab.{name}" in forbidden for floor, forbidden in FORBIDDEN.items() if floor != name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_says_what_it_is_for(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 5, f"{path.relative_to(PKG)} has no docstring saying what it is for"


def _core_graph(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between core modules. The package itself (``steerlab``, its ``__init__``) is left out:
    it imports every module to export them, and ``remote.register_steerlab`` imports it to ship the
    package to NDIF, which is not a dependency of one module on another."""
    core = set(imports)
    return {m: {n for n in deps if n in core and n != m} for m, deps in imports.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _core_imports() -> dict[str, set[str]]:
    return {"steerlab." + p.stem: _imported(p) for p in PKG.glob("*.py") if p.name != "__init__.py"}


def test_no_import_cycle_among_core_modules() -> None:
    assert _cycles(_core_graph(_core_imports())) == []


def _all_imports(overrides: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Every module of ``lib/steerlab`` but the package's own ``__init__`` (it imports everything to export it)
    and what it imports, each import resolved to a module of the package (``steerlab.study.compare.x`` is an
    edge to ``steerlab.study.compare``); ``overrides`` replaces a module's source (a planted import)."""
    paths = {_module_name(p): p for p in MODULES if p != PKG / "__init__.py"}
    extra = dict(overrides or {})
    for name in extra:
        paths.setdefault(name, PKG / (name.split(".", 1)[1].replace(".", "/") + ".py"))
    modules = set(paths)

    def resolve(n: str) -> str | None:
        while n and n not in modules:
            n = n.rpartition(".")[0]
        return n or None

    graph = {}
    for name, path in paths.items():
        found = _imported(path, extra.get(name))
        graph[name] = {r for n in found if (r := resolve(n)) is not None and r != name}
    return graph


def test_no_import_cycle_anywhere_in_lib() -> None:
    graph = _all_imports()
    assert len(graph) > 60, "the walker should see every module"
    assert _cycles(graph) == []


def test_a_planted_cycle_in_lab_and_an_absolute_upward_import_are_caught() -> None:
    """The checks can fail: two lab modules importing each other (as lab.page and lab.report once did), and
    a study module importing lab by its absolute name (parsed from text: nothing is written into the package)."""
    planted = {"steerlab.lab.page": '"""probe."""\nfrom .report import record\n',
               "steerlab.lab.report": '"""probe."""\nfrom steerlab.lab import page\n'}
    assert ["steerlab.lab.page", "steerlab.lab.report"] in _cycles(_all_imports(planted))
    probe = PKG / "study" / "_probe.py"
    found = _imported(probe, '"""probe module for the layout test itself."""\nfrom steerlab import lab\n')
    assert "steerlab.lab" in found
    bad = [n for n in found for f in FORBIDDEN["study"] if n == f or n.startswith(f + ".")]
    assert bad == ["steerlab.lab"]


def test_the_cycle_finder_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    # a lazy import and one under TYPE_CHECKING are edges too
    probe = PKG / "models.py"
    src = ('"""probe."""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .steer import x\n'
           'def f():\n    from .lens import y\n')
    assert {"steerlab.steer", "steerlab.lens"} <= _imported(probe, src)


def test_checker_sees_a_violation() -> None:
    """The parser itself: a relative import from core into lab is caught (parsed from text: nothing
    is written into the package)."""
    probe = PKG / "_probe.py"
    found = _imported(probe, '"""probe module for the layout test itself."""\nfrom .lab import widget\n')
    assert "steerlab.lab.widget" in found or "steerlab.lab" in found


NOTEBOOKS = sorted((PKG.parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean(path: Path) -> None:
    """Each notebook as nbformat 4.5 wants it (every cell has a unique id: without one, nbformat warns now and
    will refuse later), with no outputs or execution counts committed and one tagged ``parameters`` cell."""
    import json

    nb = json.loads(path.read_text(encoding="utf-8"))
    ids = [c.get("id") for c in nb["cells"]]
    assert None not in ids, f"{path.name}: cell {ids.index(None)} has no id"
    assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name}: outputs committed"
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1
