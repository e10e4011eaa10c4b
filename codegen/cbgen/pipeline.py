"""The pipeline: schema files to checked schemas, to a package model, to file bytes.

load (`load`) -> validate (`validate`, then `naming.check_names`) -> model
(`model.build`) -> render (`render`) -> format (`output`). Everything happens in
memory; `output.diff` and `output.write_tree` then compare or write the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import SchemaError
from .defs import Schema
from .load import Node, load_file, load_text
from .model import Package, build
from .naming import check_names
from .output import format_python
from .problems import Problems
from .render import render_package
from .validate import validate

__all__ = ["compile_schemas", "load_schemas", "load_sources", "package_files"]


def _shown(path: Path, base: Path) -> str:
    """`path` relative to `base` with forward slashes, or absolute when outside it."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def load_schemas(paths: Sequence[Path], root: Path) -> list[Schema]:
    """Load and check schema files; raises SchemaError with every problem found.

    Messages name files relative to the working directory; generated headers name
    them relative to `root`, the project folder.
    """
    cwd = Path.cwd()
    shown = [_shown(p, cwd) for p in paths]
    problems = Problems(shown)
    loaded = []
    for path, display in zip(paths, shown, strict=True):
        node, errors = load_file(path, display)
        problems.items.extend(errors)
        loaded.append((display, _shown(path, root), node))
    return _checked(loaded, problems)


def load_sources(sources: Sequence[tuple[str, str]]) -> list[Schema]:
    """`load_schemas` for (file name, YAML text) pairs held in memory."""
    problems = Problems([name for name, _ in sources])
    loaded = []
    for name, text in sources:
        node, errors = load_text(text, name)
        problems.items.extend(errors)
        loaded.append((name, name, node))
    return _checked(loaded, problems)


def _checked(loaded: list[tuple[str, str, Node | None]], problems: Problems) -> list[Schema]:
    schemas = validate(loaded, problems)
    check_names(schemas, problems)
    if problems:
        raise SchemaError(problems.messages())
    return schemas


def compile_schemas(paths: Sequence[Path], root: Path, package: str, models: str) -> Package:
    return build(load_schemas(paths, root), package, models)


def package_files(package: Package, target: Path) -> dict[str, bytes]:
    """The bytes of every file of `package`, formatted as if in the folder `target`."""
    return format_python(render_package(package), target)
