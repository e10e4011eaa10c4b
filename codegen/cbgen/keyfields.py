"""The options that name a field of their command: `ordering_key` and `rate_limit_key`.

They need resolved types (an enum is a key, a struct is not), so `validate` runs
this after resolution. A domain option applies to every command that does not
override it: a command without the field is reported at the domain option's line,
naming the command.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .defs import KEY_OPTIONS, CommandDef, FieldDef, KeyOption, Schema
from .problems import Problems, hint

__all__ = ["KEY_TYPES", "check_key_fields"]

KEY_TYPES = ("string", "int", "uuid", "bool", "date", "decimal")
"""Scalars with one stable text form; enums are keys too."""
_WHY = {
    "list": "a list has no stable text form",
    "dict": "a dict has no stable text form",
    "struct": "a struct has no stable text form",
    "any": "an `any` value has no fixed type",
    "float": "a float's text form is not exact",
    "bytes": "bytes have no text form",
    "datetime": "one instant has many text forms (offsets)",
    "time": "a time has many text forms (offsets)",
}


def _refusal(f: FieldDef) -> str | None:
    """Why field `f` cannot be a key; None when it can."""
    t = f.type
    if t.nullable:
        return "a nullable field may have no value"
    if t.kind in ("list", "dict"):
        return _WHY[t.kind]
    if t.kind == "named":
        return None if t.target is not None and t.target.enum is not None else _WHY["struct"]
    return None if t.name in KEY_TYPES else _WHY.get(t.name, "it has no stable text form")


def _check(
    p: Problems,
    key: str,
    opt: KeyOption,
    cmd: CommandDef,
    resolved: Collection[int],
    domain_level: bool,
) -> None:
    where = f"command `{cmd.name}`"
    fields = {f.name: f for f in cmd.fields}
    f = fields.get(opt.field)
    if f is None:
        h = hint(opt.field, fields)
        extra = f" (give it the field, or set `{key}` in its options)" if domain_level else ""
        p.add(opt.mark, f"`{key}` names no field of {where}: `{opt.field}`{h or extra}")
        return
    if id(f) not in resolved:
        return  # its type is reported already
    why = _refusal(f)
    if why is not None:
        p.add(
            opt.mark,
            f"`{key}` `{opt.field}` of {where} is `{f.type}`: a key must be a string, int, "
            f"uuid, enum, bool, date or decimal field ({why})",
        )


def check_key_fields(schemas: Sequence[Schema], resolved: Collection[int], p: Problems) -> None:
    """Report key options naming no field, or a field that cannot be a key.

    `resolved` holds the ids of the fields whose types resolved.
    """
    lonely: set[int] = set()  # rate_limit_key options reported without a rate_limit
    for s in schemas:
        for cmd in s.commands:
            merged = {**s.options, **cmd.options}
            for key in KEY_OPTIONS:
                opt = merged.get(key)
                if isinstance(opt, KeyOption):
                    _check(p, key, opt, cmd, resolved, key not in cmd.options)
            rk = merged.get("rate_limit_key")
            if isinstance(rk, KeyOption) and "rate_limit" not in merged and id(rk) not in lonely:
                lonely.add(id(rk))
                p.add(
                    rk.mark,
                    f"`rate_limit_key` without a `rate_limit`: command `{cmd.name}` has none "
                    '(add `rate_limit: "N/s"`, `/m` or `/h`)',
                )
