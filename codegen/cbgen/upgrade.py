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

from .defs import FieldDef

__all__ = ["mechanical_body"]


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
