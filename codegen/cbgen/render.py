"""Rendering: models to source text with jinja2, and nothing else.

One environment (`StrictUndefined`, whitespace-exact); templates only loop and
branch over the objects `model` built. Formatting and writing are `output`'s.
"""

from __future__ import annotations

from functools import cache

import jinja2

from .model import Module, Package
from .pytext import pystr

__all__ = ["environment", "render_module", "render_package"]


@cache
def environment() -> jinja2.Environment:
    """The one jinja2 environment: strict, whitespace-exact, filters registered once."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cbgen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pystr"] = pystr
    return env


def render_module(module: Module) -> str:
    return environment().get_template("module.py.jinja").render(m=module)


def render_package(package: Package) -> dict[str, str]:
    """File name -> unformatted source of the generated package."""
    env = environment()
    files = {m.filename: render_module(m) for m in package.modules}
    files["__init__.py"] = env.get_template("package.py.jinja").render(p=package)
    files["py.typed"] = ""
    return dict(sorted(files.items()))
