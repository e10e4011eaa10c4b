"""Whether the worker's decode certainly accepts a command, told from its values alone.

`codec.validate` checks every command a sender sends by decoding its JSON with the
decoder the worker uses: 1.2 us of the 8 us a send spends in Python, and every
sending thread waits for the one that holds the GIL (ADR 0010). For a command whose
fields are all plain scalars, looking at each value's exact type and its declared
bounds gives the same answer for the values recognised here, in a third of that.

It only ever says "certainly accepted". A value it does not recognise (a subclass
of the field's type, a float that is not finite, an int beyond its bounds or
int64's, a string whose length breaks its bounds, a constraint without a rule here
such as `pattern` or `multiple_of`) sends the command to decode, so what is refused
is refused by decode, with decode's message. tests/runtime/test_accepts.py checks
the two agree, value by value. Leaf module: it imports nothing from cbus.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import msgspec.inspect as mi

__all__ = ["certain", "rules"]

# cbus's `int` is PostgreSQL's bigint (codec re-exports these).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# How a field's value is checked beyond its exact type.
_TYPE = 0  # the type alone
_BOUNDS = 1  # an int within [lo, hi]
_LENGTH = 2  # a str whose len() is within [lo, hi] (code points, as msgspec counts)
_FINITE = 3  # a float that is neither NaN nor infinite (msgspec writes those as null)
_NAIVE = 4  # a datetime or time without tzinfo, or in UTC

Rule = tuple[str, type[Any], bool, int, int, int]
"""(attribute, exact type, None allowed, lo, hi, how)."""

_UTC = dt.UTC
_PLAIN: dict[type[mi.Type], type[Any]] = {
    mi.BoolType: bool,
    mi.UUIDType: uuid.UUID,
    mi.DecimalType: decimal.Decimal,
    mi.DateType: dt.date,
}
_rules: dict[type[Any], tuple[Rule, ...] | None] = {}


def _rule(name: str, info: mi.Type) -> Rule | None:
    nullable = False
    if isinstance(info, mi.UnionType):
        others = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(others) != 1 or len(info.types) != 2:
            return None
        nullable, info = True, others[0]
    if isinstance(info, mi.Metadata):  # extra_json_schema and such: no constraint
        info = info.type
    if isinstance(info, mi.IntType):
        if info.multiple_of is not None:
            return None
        lo = max(
            INT64_MIN,
            info.ge if info.ge is not None else INT64_MIN,
            info.gt + 1 if info.gt is not None else INT64_MIN,
        )
        hi = min(
            INT64_MAX,
            info.le if info.le is not None else INT64_MAX,
            info.lt - 1 if info.lt is not None else INT64_MAX,
        )
        return (name, int, nullable, lo, hi, _BOUNDS)
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return None
        lo = info.min_length or 0
        hi = info.max_length if info.max_length is not None else INT64_MAX
        return (name, str, nullable, lo, hi, _LENGTH)
    if isinstance(info, mi.FloatType):
        if any(getattr(info, c) is not None for c in ("gt", "ge", "lt", "le", "multiple_of")):
            return None
        return (name, float, nullable, 0, 0, _FINITE)
    if isinstance(info, mi.DateTimeType | mi.TimeType):
        if info.tz is not None:
            return None
        return (name, dt.datetime if isinstance(info, mi.DateTimeType) else dt.time,
                nullable, 0, 0, _NAIVE)  # fmt: skip
    if isinstance(info, mi.EnumType):
        return (name, info.cls, nullable, 0, 0, _TYPE)
    plain = _PLAIN.get(type(info))
    if plain is None:
        return None
    return (name, plain, nullable, 0, 0, _TYPE)


def rules(type_: type[Any]) -> tuple[Rule, ...] | None:
    """The rules of a command type whose every field has one; None for any other."""
    try:
        return _rules[type_]
    except KeyError:
        pass
    found: tuple[Rule, ...] | None = None
    try:
        info = mi.type_info(type_)
    except (TypeError, ValueError):
        info = None
    # A __post_init__ runs on decode and may refuse what the types allow.
    if isinstance(info, mi.DataclassType | mi.StructType) and not hasattr(type_, "__post_init__"):
        each = [_rule(f.name, f.type) for f in info.fields]
        if all(r is not None for r in each):
            found = tuple(r for r in each if r is not None)
    _rules[type_] = found
    return found


def certain(value: Any, rules: tuple[Rule, ...]) -> bool:
    """True when decode certainly accepts `value`'s JSON; False: ask decode."""
    for name, exact, nullable, lo, hi, how in rules:
        item = getattr(value, name)
        if type(item) is not exact:
            if item is None and nullable:
                continue
            return False
        if how == _TYPE:
            continue
        if how == _BOUNDS:
            if not lo <= item <= hi:
                return False
        elif how == _LENGTH:
            if not lo <= len(item) <= hi:
                return False
        elif how == _FINITE:
            if item - item != 0.0:  # NaN and the infinities
                return False
        elif item.tzinfo is not None and item.tzinfo is not _UTC:
            return False
    return True
