"""The earlier versions of a command as generated: a class each, and an upgrade hook.

Hooks go step by step: the hook of version K returns version K+1 (the next
`previous` entry's class, or the command's own class for the last one), so adding
a version adds one hook and leaves the others as they were. A hook's default body
is mechanical when every field of the next version either exists in version K
with the same type (copied) or is optional there (left to its default); fields of
version K the next version no longer has are dropped, as protobuf and msgspec do.
Anything else (a retyped field, a new required one) is left to the user: the body
raises `NotImplementedError` naming the hook and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .defs import CommandDef, FieldDef

if TYPE_CHECKING:
    from .model import Field, Previous

__all__ = ["hook_name", "mechanical_body", "previous_versions"]


def hook_name(method: str, version: int) -> str:
    return f"upgrade_{method}_v{version}"


def mechanical_body(old: list[FieldDef], new: list[FieldDef]) -> tuple[list[str], str]:
    """(keyword arguments that build the next version from `old`, "") or ([], why not)."""
    before = {f.name: f for f in old}
    args: list[str] = []
    for f in new:
        o = before.get(f.name) or before.get(f.renamed_from)
        if o is None:
            if f.required:
                return [], f"field `{f.name}` is new and required"
            continue
        if str(o.type) != str(f.type):
            return [], f"field `{f.name}` changed type from `{o.type}` to `{f.type}`"
        args.append(f"{f.name}=old.{o.name}")
    return args, ""


def previous_versions(
    c: CommandDef,
    method: str,
    build_fields: Callable[[list[FieldDef]], list[Field]],
) -> list[Previous]:
    from .model import Previous, Struct
    from .pytext import docstring

    out: list[Previous] = []
    chain = [*c.previous]
    for i, prev in enumerate(chain):
        is_last = i == len(chain) - 1
        target = c.name if is_last else f"{c.name}V{chain[i + 1].version}"
        next_fields = c.fields if is_last else chain[i + 1].fields
        args, why = mechanical_body(prev.fields, next_fields)
        hook = hook_name(method, prev.version)
        doc = prev.description or f"Version {prev.version} of `{c.name}`, kept for queued messages."
        struct = Struct(f"{c.name}V{prev.version}", docstring(doc), build_fields(prev.fields))
        returns = "" if why else f"{target}({', '.join(args)})"
        out.append(Previous(prev.version, struct, hook, target, returns, why))
    return out
