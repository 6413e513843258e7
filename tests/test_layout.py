"""The package's floors: core (``steerlab/*.py``) never imports ``steerlab.study`` or
``steerlab.lab``; study never imports lab. Parsed from the source, so a lazy import inside a
function counts too. Every module says what it is for in its first lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lib" / "steerlab"


def _floor(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else "core"


def _imported(path: Path) -> set[str]:
    """Absolute dotted names of the steerlab modules a file imports."""
    tree = ast.parse(path.read_text())
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
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "steerlab" or n.startswith("steerlab.")}


FORBIDDEN = {"core": ("steerlab.study", "steerlab.lab"), "study": ("steerlab.lab",), "lab": ()}
MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_floors(path: Path) -> None:
    bad = [n for n in _imported(path) for f in FORBIDDEN[_floor(path)] if n == f or n.startswith(f + ".")]
    assert not bad, f"{path.relative_to(PKG)} ({_floor(path)}) imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_says_what_it_is_for(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 5, f"{path.relative_to(PKG)} has no docstring saying what it is for"


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    """The parser itself: a relative import from core into lab is caught."""
    fake = PKG / "_probe_tmp.py"
    try:
        fake.write_text('"""probe module for the layout test itself."""\nfrom .lab import widget\n')
        assert "steerlab.lab.widget" in _imported(fake) or "steerlab.lab" in _imported(fake)
    finally:
        fake.unlink()
