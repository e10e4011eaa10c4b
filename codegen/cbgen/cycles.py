"""Cycle detection: types that hold themselves by value, defaults that build themselves.

Domains may refer to each other's types in a cycle; only a type that holds itself
by value, in one domain or across several, is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .defs import FieldDef, Schema, TypeDef, TypeRef
from .problems import Problems

__all__ = ["default_cycles", "value_cycles"]


def value_cycles(schemas: list[Schema], p: Problems) -> None:
    """A struct that holds itself by value (not through `?`, list or dict) cannot exist."""
    edges: dict[int, list[tuple[FieldDef, TypeDef]]] = {}
    types: dict[int, TypeDef] = {}
    for s in schemas:
        for t in s.types:
            types[id(t)] = t
            edges[id(t)] = [
                (f, f.type.target)
                for f in t.fields or ()
                if f.type.kind == "named"
                and not f.type.nullable
                and f.type.target is not None
                and f.type.target.fields is not None
            ]
    reported: set[frozenset[int]] = set()
    state: dict[int, int] = {}
    stack: list[tuple[TypeDef, FieldDef | None]] = []

    def qual(t: TypeDef, home: str) -> str:
        return t.name if t.domain == home else f"{t.domain}.{t.name}"

    def visit(t: TypeDef) -> None:
        state[id(t)] = 1
        for f, target in edges.get(id(t), []):
            stack.append((t, f))
            if state.get(id(target)) == 1:
                start = next(i for i, (x, _) in enumerate(stack) if x is target)
                cycle = stack[start:]
                key = frozenset(id(x) for x, _ in cycle)
                if key not in reported:
                    reported.add(key)
                    home = target.domain
                    path = " -> ".join(f"`{qual(x, home)}.{g.name}`" for x, g in cycle if g)
                    p.add(
                        cycle[0][1].mark if cycle[0][1] else target.mark,
                        f"Type `{qual(target, home)}` contains itself by value: {path} -> "
                        f"`{qual(target, home)}` (make one field optional, a list or a dict)",
                    )
            elif state.get(id(target)) is None:
                visit(target)
            stack.pop()
        state[id(t)] = 2

    for t in types.values():
        if id(t) not in state:
            visit(t)


def _built(ref: TypeRef, value: Any) -> Iterable[tuple[TypeDef, Any]]:
    """The structs a checked default builds: (type, the fields it gives) each."""
    if value is None:
        return
    if ref.kind in ("list", "dict") and ref.item is not None:
        for v in value if ref.kind == "list" else value.values():
            yield from _built(ref.item, v)
    elif ref.kind == "named" and ref.target is not None and ref.target.fields is not None:
        yield ref.target, value
        fields = {f.name: f for f in ref.target.fields}
        for k, v in value.items():
            yield from _built(fields[k].type, v)


def default_cycles(schemas: list[Schema], p: Problems) -> None:
    """A default that builds a struct whose own defaults build it again never ends.

    `Node.kids` defaulting to `[{name: leaf}]` builds a `Node`, whose `kids` default
    builds another, and so on: every construction and every decode would recurse
    until Python gives up.
    """
    state: dict[int, int] = {}

    def visit(f: FieldDef) -> None:
        state[id(f)] = 1
        for t, given in _built(f.type, f.default if f.has_default else None):
            for g in t.fields or ():
                if g.name in given or not g.has_default:
                    continue
                if state.get(id(g)) == 1:
                    assert g.default_node is not None
                    p.add(
                        g.default_node.mark,
                        f"Invalid default for `{g.name}`: it builds a `{t.name}` whose "
                        f"`{g.name}` default builds another, without end "
                        f"(give `{g.name}` in the default, or make it empty)",
                    )
                    g.has_default = False
                elif id(g) not in state:
                    visit(g)
        state[id(f)] = 2

    for f in (f for s in schemas for f in s.all_fields()):
        if f.has_default and id(f) not in state:
            visit(f)
