"""`cbgen scaffold`: handler implementation files, written once and then the user's.

A scaffolded file subclasses the generated stub of its domain with one method per
command, each raising `NotImplementedError` with a TODO. An existing file is never
touched: it is read (with `ast`, never imported) to list the commands it does not
implement yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .model import Module, Package
from .output import format_python
from .render import environment

__all__ = ["scaffold", "unimplemented"]


def _is_stub(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise):
        return not body or all(isinstance(s, ast.Pass) for s in body)
    exc = body[0].exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def unimplemented(source: str, module: Module) -> list[str] | None:
    """Commands of `module` a handler file leaves unimplemented; None without a subclass."""
    tree = ast.parse(source)
    stubs = {module.handlers, module.async_handlers}
    done: set[str] = set()
    found = False
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        names = {
            b.attr if isinstance(b, ast.Attribute) else b.id
            for b in node.bases
            if isinstance(b, ast.Attribute | ast.Name)
        }
        if not names & stubs:
            continue
        found = True
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_stub(item):
                done.add(item.name)
    if not found:
        return None
    return [f"{c.kind} ({c.method})" for c in module.commands if c.method not in done]


def scaffold(package: Package, folder: Path, *, is_async: bool) -> list[str]:
    """Write missing handler files into `folder`; return report lines."""
    report: list[str] = []
    template = environment().get_template("scaffold.py.jinja")
    fresh: dict[str, str] = {}
    for m in package.modules:
        path = folder / m.filename
        if path.exists():
            continue
        fresh[m.filename] = template.render(m=m, package=package.name, is_async=is_async)
    formatted = format_python(fresh, folder) if fresh else {}
    if fresh:
        folder.mkdir(parents=True, exist_ok=True)
    for m in package.modules:
        path = folder / m.filename
        if m.filename in formatted:
            with path.open("xb") as f:  # never overwrite, even on a race
                f.write(formatted[m.filename])
            report.append(f"Wrote {path.as_posix()}: {len(m.commands)} commands to implement")
            continue
        try:
            todo = unimplemented(path.read_text(encoding="utf-8"), m)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            report.append(f"Kept {path.as_posix()}: cannot read it ({exc})")
            continue
        if todo is None:
            report.append(
                f"Kept {path.as_posix()}: no subclass of {m.handlers} or {m.async_handlers} found"
            )
        elif todo:
            report.append(f"Kept {path.as_posix()}: not implemented: {', '.join(todo)}")
        else:
            report.append(f"Kept {path.as_posix()}: every command is implemented")
    return report
