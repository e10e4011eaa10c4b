"""The type-expression parser: `T`, `T?`, `list[T]`, `dict[string, T]`, `domain.T`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .defs import SCALARS, TypeRef
from .load import Mark

__all__ = ["TypeSyntaxError", "parse", "set_marks", "walk"]


class TypeSyntaxError(Exception):
    pass


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def parse(text: str, pos: int) -> tuple[TypeRef, int]:
    """Parse `T`, `T?`, `list[T]`, `dict[string, T]` from `pos`; returns (ref, end)."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    m = _IDENT.match(text, pos)
    if m is None:
        found = text[pos:] or "the end"
        raise TypeSyntaxError(f"expected a type name at `{found}`")
    name = m.group(0)
    pos = m.end()
    if name in ("list", "dict") and pos < len(text) and text[pos] == "[":
        pos += 1
        if name == "dict":
            key, pos = parse(text, pos)
            if str(key) != "string":
                raise TypeSyntaxError(f"dict keys must be `string`, got `{key}`")
            pos = _expect(text, pos, ",")
        item, pos = parse(text, pos)
        pos = _expect(text, pos, "]")
        ref = TypeRef(name, item=item)
    elif name in ("list", "dict"):
        example = "list[T]" if name == "list" else "dict[string, T]"
        raise TypeSyntaxError(f"`{name}` needs an item type, as in `{example}`")
    else:
        ref = TypeRef("scalar" if name in SCALARS else "named", name)
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos < len(text) and text[pos] == "?":
        ref.nullable = True
        pos += 1
    return ref, pos


def _expect(text: str, pos: int, char: str) -> int:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text) or text[pos] != char:
        found = text[pos] if pos < len(text) else "the end"
        raise TypeSyntaxError(f"expected `{char}`, got `{found}`")
    return pos + 1


def set_marks(ref: TypeRef, mark: Mark) -> None:
    ref.mark = mark
    if ref.item is not None:
        set_marks(ref.item, mark)


def walk(ref: TypeRef) -> Iterable[TypeRef]:
    yield ref
    if ref.item is not None:
        yield from walk(ref.item)
