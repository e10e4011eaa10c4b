"""`cbgen docs`: a Markdown reference per domain, from the same model as the code."""

from __future__ import annotations

from typing import Any

from . import RUNTIME_OPTIONS
from .model import Field, Package
from .render import environment

__all__ = ["render_docs"]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def constraints(f: Field) -> str:
    """`ge: 1, max_length: 64` as a reader sees it."""
    return ", ".join(f"{k}: {v}" for k, v in f.constraints.items())


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def options(values: dict[str, Any]) -> str:
    """`max_attempts: 3`, `backoff: [1, 10, 60]` s, `visibility_timeout: 30` s, and
    `timeout: 5` s where the schema sets one."""
    backoff = ", ".join(_number(x) for x in values["backoff"])
    text = (
        f"`max_attempts: {values['max_attempts']}`, `backoff: [{backoff}]` s, "
        f"`visibility_timeout: {values['visibility_timeout']}` s"
    )
    if values.get("timeout") is not None:
        text += f", `timeout: {_number(values['timeout'])}` s"
    for key in ("ordering_key", "rate_limit", "rate_limit_key"):
        if values.get(key) is not None:
            text += f", `{key}: {values[key]}`"
    kept = values.get("retention")
    if kept is not None and kept != RUNTIME_OPTIONS["retention"]:
        text += f", `retention: {{{', '.join(f'{k}: {duration(v)}' for k, v in kept.items())}}}`"
    return text


def duration(seconds: int) -> str:
    """`7d`, `12h`, `90s`: the largest unit that divides the seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_docs(package: Package) -> dict[str, str]:
    """File name -> Markdown, one file per domain."""
    env = environment()
    template = env.get_template("docs.md.jinja")
    return {
        f"{m.domain}.md": template.render(
            m=m, package=package.name, cell=_cell, constraints=constraints, options=options
        )
        for m in package.modules
    }
