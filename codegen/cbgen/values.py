"""Value checks: constraints against their field's type, and defaults against both."""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import math
import re
import uuid
import warnings
from typing import Any

from .defs import INT64, LENGTH, NUMERIC, FieldDef, TypeRef
from .load import Map, Mark, Node, Scalar, Seq
from .problems import Problems, hint, joined, kind_of

__all__ = ["check_constraints", "check_default", "check_value"]


def check_constraints(f: FieldDef, p: Problems) -> None:
    ref = f.type
    kind = ref.name if ref.kind == "scalar" else ref.kind
    base = ref.base()
    checked: dict[str, Any] = {}
    for c, node in f.constraints.items():
        mark = node.mark
        v = node.value if isinstance(node, Scalar) else None
        if c in NUMERIC:
            if kind not in ("int", "float"):
                extra = " (msgspec cannot bound decimals)" if kind == "decimal" else ""
                p.add(mark, f"Constraint `{c}` applies to `int` or `float`, not `{base}`{extra}")
                continue
            if kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
                p.add(
                    mark,
                    f"Expected `int` for `{c}` of an `int` field, got `{kind_of(node)}`"
                    if not isinstance(v, float)
                    else f"Expected `int` for `{c}` of an `int` field, got `{v}`",
                )
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                p.add(mark, f"Expected a finite number for `{c}`, got `{kind_of(node)}`")
                continue
            if not math.isfinite(v):
                p.add(mark, f"Expected a finite number for `{c}`, got `{node.text}`")
                continue
            if kind == "int" and not INT64[0] <= v <= INT64[1]:
                p.add(
                    mark,
                    f"Expected `int` from -2**63 to 2**63 - 1 for `{c}`, got `{v}` "
                    "(msgspec bounds are 64-bit)",
                )
                continue
            checked[c] = v
        elif c in LENGTH:
            if kind not in ("string", "bytes", "list", "dict"):
                p.add(
                    mark,
                    f"Constraint `{c}` applies to `string`, `bytes`, `list` or `dict`, "
                    f"not `{base}`",
                )
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                shown = v if isinstance(v, int) and not isinstance(v, bool) else kind_of(node)
                p.add(mark, f"Expected `int` >= 0 for `{c}`, got `{shown}`")
                continue
            checked[c] = v
        else:
            if kind != "string":
                p.add(mark, f"Constraint `pattern` applies to `string`, not `{base}`")
                continue
            if not isinstance(v, str):
                p.add(mark, f"Expected `str` for `pattern`, got `{kind_of(node)}`")
                continue
            try:
                with warnings.catch_warnings():
                    # `[A--Z]` warns of a future meaning; the pattern is still valid.
                    warnings.simplefilter("ignore", FutureWarning)
                    re.compile(v)
            except re.error as exc:
                p.add(mark, f"Invalid regular expression for `pattern`: {exc}")
                continue
            checked[c] = v
    lo = [(k, checked[k]) for k in ("ge", "gt") if k in checked]
    hi = [(k, checked[k]) for k in ("le", "lt") if k in checked]
    for lk, lv in lo:
        for hk, hv in hi:
            if lv > hv or (lv == hv and (lk == "gt" or hk == "lt")):
                p.add(f.mark, f"Constraints `{lk}: {lv}` and `{hk}: {hv}` allow no value")
    if checked.get("min_length", 0) > checked.get("max_length", math.inf):
        p.add(
            f.mark,
            f"Constraints `min_length: {checked['min_length']}` and "
            f"`max_length: {checked['max_length']}` allow no value",
        )
    f.constraints = checked


class _BadValue(Exception):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


# msgspec encodes NaN and infinity as JSON `null`, which no `float` field decodes.
_NO_NAN = " (JSON has no NaN or infinity)"


class _Unchecked(Exception):
    """The default reaches a type that is already reported (unknown, or an enum without
    a valid value): nothing more can be said about it."""


def _value(ref: TypeRef, node: Node, path: str) -> Any:
    """Check a default against its type; returns it normalised (see `model.literal`)."""
    where = f" at `{path}`" if path else ""
    if isinstance(node, Scalar) and node.value is None:
        if ref.nullable or (ref.kind == "scalar" and ref.name == "any"):
            return None  # `any` holds every JSON value, null included
        raise _BadValue(node.mark, f"Expected `{ref.base()}`, got `null`{where}")
    bad = _BadValue(node.mark, f"Expected `{ref.base()}`, got `{kind_of(node)}`{where}")
    if ref.kind == "list":
        if not isinstance(node, Seq):
            raise bad
        assert ref.item is not None
        return [_value(ref.item, n, f"{path}[{i}]") for i, n in enumerate(node.items)]
    if ref.kind == "dict":
        if not isinstance(node, Map):
            raise bad
        assert ref.item is not None
        return {k.text: _value(ref.item, n, _key_path(path, k.text)) for k, n in node.items}
    if ref.kind == "named":
        t = ref.target
        if t is None or t.enum == []:
            raise _Unchecked
        if t.enum is not None:
            # As enum values are read: by their text, so `yes` is `yes`, not true.
            if not isinstance(node, Scalar):
                raise bad
            if node.text not in t.enum:
                raise _BadValue(
                    node.mark,
                    f"Expected one of {joined(t.enum)}, got `{node.text}`{where}"
                    + hint(node.text, t.enum),
                )
            return node.text
        if not isinstance(node, Map):
            raise bad
        fields = {f.name: f for f in t.fields or ()}
        out: dict[str, Any] = {}
        for k, n in node.items:
            f = fields.get(k.text)
            if f is None:
                raise _BadValue(
                    k.mark,
                    f"Unknown field `{k.text}` of `{t.name}`{where}" + hint(k.text, fields),
                )
            v = _value(f.type, n, _key_path(path, k.text))
            _check_value_constraints(f, v, n, _key_path(path, k.text))
            out[k.text] = v
        missing = [f.name for f in t.fields or () if f.required and f.name not in out]
        if missing:
            raise _BadValue(
                node.mark, f"Object missing required field `{missing[0]}` of `{t.name}`{where}"
            )
        return out
    return _scalar_value(ref, node, bad, where)


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _scalar_value(ref: TypeRef, node: Node, bad: _BadValue, where: str) -> Any:
    name = ref.name
    if name == "any":
        return _json_value(node)
    if not isinstance(node, Scalar):
        raise bad
    v, text = node.value, node.text
    if name == "string":
        if not isinstance(v, str):
            raise _BadValue(
                node.mark, f"Expected `str`, got `{kind_of(node)}`{where} (quote the value)"
            )
        return v
    if name == "bool":
        if not isinstance(v, bool):
            raise bad
        return v
    if name == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad
        return v
    if name == "float":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise bad
        if not math.isfinite(v):
            raise _BadValue(node.mark, f"Expected a finite `float`, got `{text}`{where}{_NO_NAN}")
        return float(v)
    if isinstance(v, bool):
        raise bad
    try:
        if name == "decimal":
            d = decimal.Decimal(text)
            if not d.is_finite():
                raise ValueError
            return d
        if name == "uuid":
            return uuid.UUID(text)
        if name == "datetime":
            return datetime.datetime.fromisoformat(text)
        if name == "date":
            return datetime.date.fromisoformat(text)
        if name == "time":
            return datetime.time.fromisoformat(text)
        if name == "bytes":
            return base64.b64decode(text, validate=True)
    except (ValueError, decimal.InvalidOperation, binascii.Error):
        form = {
            "decimal": "a decimal number",
            "uuid": "a UUID",
            "datetime": "an ISO 8601 datetime",
            "date": "an ISO 8601 date",
            "time": "an ISO 8601 time",
            "bytes": "base64",
        }[name]
        raise _BadValue(node.mark, f"Expected `{name}` ({form}), got `{text}`{where}") from None
    raise bad  # pragma: no cover


def _json_value(node: Node) -> Any:
    if isinstance(node, Seq):
        return [_json_value(n) for n in node.items]
    if isinstance(node, Map):
        return {k.text: _json_value(n) for k, n in node.items}
    v = node.value
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return v
    raise _BadValue(node.mark, f"Expected a JSON value for `any`, got `{node.text}`")


def _check_value_constraints(f: FieldDef, value: Any, node: Node, path: str) -> None:
    if value is None or not f.constraints:
        return
    where = f" at `{path}`" if path else ""
    base = f.type.base()
    for c, bound in f.constraints.items():
        ok = True
        if c == "ge":
            ok = value >= bound
        elif c == "gt":
            ok = value > bound
        elif c == "le":
            ok = value <= bound
        elif c == "lt":
            ok = value < bound
        elif c == "min_length":
            ok = len(value) >= bound
        elif c == "max_length":
            ok = len(value) <= bound
        elif c == "pattern":
            ok = re.search(bound, value) is not None
        if not ok:
            op = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}.get(c)
            if op is not None:
                msg = f"Expected `{base}` {op} {bound}, got `{value}`{where}"
            elif c == "min_length":
                msg = f"Expected `{base}` of length >= {bound}, got length {len(value)}{where}"
            elif c == "max_length":
                msg = f"Expected `{base}` of length <= {bound}, got length {len(value)}{where}"
            else:
                msg = f"Expected `str` matching `{bound}`, got `{value}`{where}"
            raise _BadValue(node.mark, msg)


def check_value(f: FieldDef, node: Node, p: Problems, where: str) -> tuple[bool, Any]:
    """Check a value given for field `f` (not its default) against its type and
    constraints: (True, the value normalised), or (False, None) once reported."""
    try:
        value = _value(f.type, node, "")
        _check_value_constraints(f, value, node, "")
    except _BadValue as exc:
        p.add(exc.mark, f"Invalid value for `{f.name}` {where}: {exc.message}")
        return False, None
    except _Unchecked:
        return False, None
    return True, value


def check_default(f: FieldDef, p: Problems) -> None:
    if not f.has_default:
        return
    node = f.default_node
    assert node is not None
    try:
        f.default = _value(f.type, node, "")
        _check_value_constraints(f, f.default, node, "")
    except _BadValue as exc:
        p.add(exc.mark, f"Invalid default for `{f.name}`: {exc.message}")
        f.has_default = False
        return
    except _Unchecked:
        f.has_default = False
        return
    mutable = (
        f.type.kind in ("list", "dict")
        or (
            f.type.kind == "named"
            and f.type.target is not None
            and f.type.target.fields is not None
        )
        or f.type.name in ("uuid",)
        or isinstance(f.default, list | dict)
    )
    if f.type.nullable and f.default is not None and mutable:
        p.add(
            node.mark,
            f"Invalid default for `{f.name}`: a nullable field's default must be null or a "
            "string, number, bool, enum, decimal or date/time value",
        )
        f.has_default = False
