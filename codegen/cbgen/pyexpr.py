"""Python expressions for schema types and values, with the imports they need.

`Expressions` serves one generated module: the annotation of a type (constraints
as `msgspec.Meta`), the literal of a checked default, and the modules both import.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

from .defs import TypeRef
from .naming import domain_alias
from .pytext import pystr

__all__ = ["SCALAR_PY", "Expressions", "datetime_call", "is_factory", "py_repr"]


SCALAR_PY = {
    "string": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "decimal": "decimal.Decimal",
    "uuid": "uuid.UUID",
    "datetime": "datetime.datetime",
    "date": "datetime.date",
    "time": "datetime.time",
    "bytes": "bytes",
    "any": "typing.Any",
}


class Expressions:
    """Builds expressions for one module, recording the imports they need."""

    def __init__(self, domain: str, models: str) -> None:
        self.domain = domain
        self.models = models
        self.stdlib: set[str] = {"typing", "uuid", "datetime"}
        self.msgspec = models == "struct"
        self.domains: set[str] = set()

    def named(self, ref: TypeRef) -> str:
        assert ref.target is not None
        if ref.domain != self.domain:
            self.domains.add(ref.domain)
            return f"{domain_alias(ref.domain)}.{ref.target.name}"
        return ref.target.name

    def annotation(self, ref: TypeRef, constraints: dict[str, Any] | None = None) -> str:
        if ref.kind == "scalar":
            py = SCALAR_PY[ref.name]
            if "." in py:
                self.stdlib.add(py.split(".")[0])
        elif ref.kind == "list":
            assert ref.item is not None
            py = f"list[{self.annotation(ref.item)}]"
        elif ref.kind == "dict":
            assert ref.item is not None
            py = f"dict[str, {self.annotation(ref.item)}]"
        else:
            py = self.named(ref)
        if constraints:
            self.msgspec = True
            args = ", ".join(f"{k}={py_repr(v)}" for k, v in constraints.items())
            py = f"typing.Annotated[{py}, msgspec.Meta({args})]"
        if ref.nullable:
            py += " | None"
        return py

    def literal(self, ref: TypeRef, value: Any) -> str:
        """The Python expression of a checked default (see `values._value`)."""
        if value is None:
            return "None"
        if ref.kind == "list":
            assert ref.item is not None
            item = ref.item
            return "[" + ", ".join(self.literal(item, v) for v in value) + "]"
        if ref.kind == "dict":
            assert ref.item is not None
            item = ref.item
            return (
                "{" + ", ".join(f"{k!r}: {self.literal(item, v)}" for k, v in value.items()) + "}"
            )
        if ref.kind == "named":
            t = ref.target
            assert t is not None
            name = self.named(ref)
            if t.enum is not None:
                return f"{name}.{value.upper()}"
            fields = {f.name: f for f in t.fields or ()}
            args = ", ".join(f"{k}={self.literal(fields[k].type, v)}" for k, v in value.items())
            return f"{name}({args})"
        if ref.name == "any":
            return py_repr(value)
        if isinstance(value, decimal.Decimal):
            self.stdlib.add("decimal")
            return f'decimal.Decimal("{value}")'
        if isinstance(value, uuid.UUID):
            self.stdlib.add("uuid")
            return f'uuid.UUID("{value}")'
        if isinstance(value, datetime.datetime):
            parts = [value.year, value.month, value.day, value.hour, value.minute, value.second]
            return datetime_call("datetime.datetime", parts, value.microsecond, value.tzinfo)
        if isinstance(value, datetime.date):
            return f"datetime.date({value.year}, {value.month}, {value.day})"
        if isinstance(value, datetime.time):
            parts = [value.hour, value.minute, value.second]
            return datetime_call("datetime.time", parts, value.microsecond, value.tzinfo)
        if isinstance(value, bytes):
            return repr(value)
        return py_repr(value)


def datetime_call(fn: str, parts: list[int], micro: int, tz: datetime.tzinfo | None) -> str:
    args = [str(p) for p in parts]
    if micro:
        args.append(str(micro))
    if tz is not None:
        offset = tz.utcoffset(None)
        assert offset is not None
        if offset == datetime.timedelta(0):
            args.append("tzinfo=datetime.UTC")
        else:
            secs = int(offset.total_seconds())
            args.append(f"tzinfo=datetime.timezone(datetime.timedelta(seconds={secs}))")
    return f"{fn}({', '.join(args)})"


def py_repr(value: Any) -> str:
    """A deterministic Python literal of a JSON-like value."""
    if isinstance(value, str):
        return pystr(value)
    if isinstance(value, list):
        return "[" + ", ".join(py_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_repr(k)}: {py_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def is_factory(ref: TypeRef, value: Any) -> bool:
    """Defaults built per instance: mutable ones, and calls ruff's B008 would flag."""
    if value is None:
        return False
    if ref.kind in ("list", "dict") or isinstance(value, list | dict):
        return True
    if ref.kind == "named" and ref.target is not None and ref.target.fields is not None:
        return True
    return ref.kind == "scalar" and ref.name == "uuid"
