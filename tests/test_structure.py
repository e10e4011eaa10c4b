"""The shape of the tree: no import circle in cbus nor cbgen, and a public surface in step.

The import graph is read from the source with `ast`, every import counted: those
under `TYPE_CHECKING` and those inside functions too, since each is a dependency a
reader must follow. A package's `__init__` counts as a module like any other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cbus
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"cbus": REPO / "runtime/cbus", "cbgen": REPO / "codegen/cbgen"}


def _modules(package: str, folder: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that `name` imports, wherever the import sits."""
    package = name.split(".")[0]
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            wanted = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in wanted:
            if target.split(".")[0] != package:
                continue
            while target not in known:  # `from .x import name`: the module is `.x`
                target = target.rpartition(".")[0]
            if target != name:
                targets.add(target)
    return targets


def import_graph(package: str) -> dict[str, set[str]]:
    paths = _modules(package, PACKAGES[package])
    return {name: _imports(name, path, set(paths)) for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle as the path that closes it, `a -> b -> a`, one per group of modules."""
    found: list[list[str]] = []
    seen: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph[node]):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])
        seen.add(node)

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_circle(package: str) -> None:
    found = circles(import_graph(package))
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_a_circle_is_found_and_named() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert circles(graph) == [["p.a", "p.b", "p.c", "p.a"]]


def test_type_checking_and_function_imports_count(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (folder / "b.py").write_text("def f():\n    from . import a\n")
    paths = _modules("p", folder)
    graph = {name: _imports(name, path, set(paths)) for name, path in paths.items()}
    assert circles(graph) == [["p.a", "p.b", "p.a"]]


def test_the_leaf_modules_import_nothing_else_from_cbus() -> None:
    graph = import_graph("cbus")
    for leaf in ("cbus.version", "cbus.wire", "cbus.records"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
    assert "cbus" not in {t for targets in graph.values() for t in targets}, (
        "a module imports the package `cbus` (its __init__)"
    )


def test_the_public_names_are_sorted_and_each_has_one_home() -> None:
    assert cbus.__all__ == sorted(cbus.__all__)
    assert len(set(cbus.__all__)) == len(cbus.__all__)
    source = (PACKAGES["cbus"] / "__init__.py").read_text()
    tree = ast.parse(source)
    [checking] = [
        n
        for n in tree.body
        if isinstance(n, ast.If) and ast.unparse(n.test) == "typing.TYPE_CHECKING"
    ]
    typed = {
        ("." * n.level + (n.module or ""), a.asname or a.name)
        for n in checking.body
        if isinstance(n, ast.ImportFrom) and n.module
        for a in n.names
    }
    lazy = {(module, name) for module, names in cbus._LAZY.items() for name in names}
    assert typed == lazy


def test_generated_code_uses_exactly_the_surface_of_cbus_api(tmp_path: Path) -> None:
    import cbus.api

    from tests.codegen.conftest import generate_case

    # The project's own package, a case whose schemas keep earlier versions, and one
    # with a rate limit and a schedule.
    evolving = generate_case(tmp_path, "evolving_pkg", "dataclass", case="evolving")
    timed = generate_case(tmp_path, "timed_pkg", "dataclass", case="timed")
    used: set[str] = set()
    imported: set[str] = set()
    paths = [*(REPO / "generated/shop").glob("*.py"), *evolving.glob("*.py"), *timed.glob("*.py")]
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "cbus":
                used.add(node.attr)
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= {f"{node.module}.{a.name}" for a in node.names}
    # `from cbus import api as cbus`: the generated module's `cbus` is `cbus.api`.
    assert {m for m in imported if m.split(".")[0] == "cbus"} == {"cbus.api"}
    # API_VERSION numbers the surface; generated code states the number it needs instead.
    assert used == set(cbus.api.__all__) - {"API_VERSION"}
    assert cbus.api.__all__ == sorted(cbus.api.__all__, key=lambda n: (not n.isupper(), n))


def test_every_name_of_cbus_api_resolves() -> None:
    import cbus.api

    for name in cbus.api.__all__:
        assert getattr(cbus.api, name) is not None, name
    assert cbus.api.send is cbus.send
    assert cbus.api.register is cbus.registry.register


# A statement in a Python string: what `grep` for SQL finds. `_queries` derives queries
# from those of queries.sql; privilege lists (`"INSERT, SELECT"`) are not statements.
_STATEMENT = re.compile(
    r"^\s*(SELECT\s|INSERT INTO|UPDATE \S+ SET|DELETE FROM|WITH \w+ AS|CREATE |DROP |ALTER |"
    r"LISTEN |UNLISTEN |NOTIFY |SET \w+ |GRANT |REVOKE |BEGIN|COMMIT|ROLLBACK|SAVEPOINT )"
)


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
        else:
            continue
        for stmt in body:  # module-level constants carry their docstring after them too
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                found.add(id(stmt.value))
    return found


def test_no_sql_statement_outside_queries_sql() -> None:
    found = []
    for name, path in sorted(_modules("cbus", PACKAGES["cbus"]).items()):
        if name == "cbus._queries":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, (str, bytes))
                and id(node) not in docs
            ):
                text = node.value.decode() if isinstance(node.value, bytes) else node.value
                if _STATEMENT.match(text):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text[:50]!r}")
    assert not found, "SQL outside sql/queries.sql:\n" + "\n".join(found)


def test_every_query_is_named_once_and_commented() -> None:
    text = (PACKAGES["cbus"] / "sql/queries.sql").read_text()
    lines = text.splitlines()
    names = [line.removeprefix("-- name: ") for line in lines if line.startswith("-- name: ")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for i, line in enumerate(lines):
        if line.startswith("-- name: "):
            assert lines[i + 1].startswith("-- "), f"queries.sql:{i + 2}: {line} has no comment"
