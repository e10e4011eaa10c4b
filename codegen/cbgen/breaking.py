"""`cbgen breaking`: the changes between two schema sets that break queued messages
or deployed senders (contract section 8).

Both sides are read with the ordinary loader and checks (`pipeline.load_sources`),
then compared domain by domain, command by command (an old kind found among a new
command's `aliases` is compared with that command), version by version. A finding
sits on the new schema's line, or on the old one when something was removed.
Additive changes (an optional field, a command, an enum value, a `previous` entry)
and dropped fields (msgspec ignores unknown fields) are quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .defs import CommandDef, FieldDef, Schema, TypeDef, TypeRef
from .load import Mark

__all__ = ["Finding", "compare"]

# old scalar -> new scalars its JSON values still decode into
WIDER = {"int": ("float", "decimal"), "float": ("decimal",)}
LOWER = ("ge", "gt", "min_length")  # a higher bound is tighter
UPPER = ("le", "lt", "max_length")  # a lower bound is tighter


@dataclass(frozen=True)
class Finding:
    mark: Mark
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        m = self.mark
        return {
            "file": m.file,
            "line": m.line,
            "col": m.col,
            "rule": self.rule,
            "message": self.message,
        }


def decodes(old: TypeRef, new: TypeRef) -> bool:
    """Whether every value valid for `old` decodes as `new`."""
    if old.nullable and not new.nullable:
        return False
    if new.kind == "scalar" and new.name == "any":
        return True
    if old.kind != new.kind:
        return False
    if old.kind in ("list", "dict"):
        assert old.item is not None and new.item is not None
        return decodes(old.item, new.item)
    if old.kind == "named":
        return (old.domain, old.name.rpartition(".")[2]) == (
            new.domain,
            new.name.rpartition(".")[2],
        )
    return old.name == new.name or new.name in WIDER.get(old.name, ())


def _tightened(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in (*LOWER, *UPPER, "pattern"):
        if key not in new:
            continue
        if key not in old:
            out.append(f"`{key}: {new[key]}` was added")
        elif key == "pattern":
            if new[key] != old[key]:
                out.append(f"`pattern` changed from `{old[key]}` to `{new[key]}`")
        elif (key in LOWER and new[key] > old[key]) or (key in UPPER and new[key] < old[key]):
            out.append(f"`{key}` tightened from {old[key]} to {new[key]}")
    return out


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _values(f: FieldDef) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in f.constraints.items()}


class _Compare:
    def __init__(self) -> None:
        self.found: list[Finding] = []

    def add(self, mark: Mark, rule: str, message: str) -> None:
        self.found.append(Finding(mark, rule, message))

    def fields(self, owner: str, old: list[FieldDef], new: list[FieldDef], versioned: bool) -> None:
        """`new` must decode every message `old` described."""
        before = {f.name: f for f in old}
        for f in new:
            o = before.get(f.name)
            where = f"field `{f.name}` of `{owner}`"
            if o is None:
                if f.required:
                    hint = " without a version bump and a `previous` entry" if versioned else ""
                    self.add(f.mark, "FIELD_REQUIRED_ADDED", f"Required {where} was added{hint}")
                continue
            if o.type.nullable and not f.type.nullable and not f.has_default:
                self.add(f.mark, "FIELD_NULLABLE_REQUIRED", f"{_cap(where)} is no longer nullable")
            elif not decodes(o.type, f.type) and not (o.type.nullable and not f.type.nullable):
                self.add(
                    f.type.mark or f.mark,
                    "FIELD_TYPE_CHANGED",
                    f"{_cap(where)} changed type from `{o.type}` to `{f.type}`: "
                    "its queued values do not decode",
                )
            if o.has_default and not f.has_default and not f.type.nullable:
                self.add(f.mark, "FIELD_DEFAULT_REMOVED", f"{_cap(where)} lost its default")
            for change in _tightened(_values(o), _values(f)):
                self.add(f.mark, "FIELD_CONSTRAINT_TIGHTENED", f"{_cap(where)}: {change}")

    def result(self, cmd: str, old: CommandDef, new: CommandDef) -> None:
        """Waiters built from the old schema decode results the new handlers return."""
        if old.result is None:
            return
        now = {f.name: f for f in new.result.fields} if new.result is not None else {}
        for o in old.result.fields:
            f = now.get(o.name)
            where = f"result field `{o.name}` of `{cmd}`"
            if f is None:
                if o.required:
                    self.add(o.mark, "RESULT_FIELD_REMOVED", f"Required {where} was removed")
            elif not decodes(f.type, o.type):
                self.add(
                    f.mark,
                    "RESULT_FIELD_TYPE_CHANGED",
                    f"{_cap(where)} changed type from `{o.type}` to `{f.type}`: "
                    "waiters built on the old schema cannot decode it",
                )

    def type(self, old: TypeDef, new: TypeDef) -> None:
        if old.enum is not None:
            if new.enum is None:
                self.add(new.mark, "TYPE_KIND_CHANGED", f"Type `{new.name}` is no longer an enum")
                return
            for v in old.enum:
                if v not in new.enum:
                    self.add(
                        new.mark,
                        "ENUM_VALUE_REMOVED",
                        f"Enum value `{v}` of `{new.name}` was removed",
                    )
            return
        if new.fields is None:
            self.add(new.mark, "TYPE_KIND_CHANGED", f"Type `{new.name}` is no longer a struct")
            return
        self.fields(new.name, old.fields or [], new.fields, versioned=False)

    def command(self, old: CommandDef, new: CommandDef) -> None:
        name = new.name
        if new.version < old.version:
            self.add(
                new.mark,
                "VERSION_LOWERED",
                f"Version of `{name}` lowered from {old.version} to {new.version}",
            )
            return
        now = {new.version: new.fields, **{p.version: p.fields for p in new.previous}}
        was = {
            old.version: (old.fields, old.mark),
            **{p.version: (p.fields, p.mark) for p in old.previous},
        }
        for v, (fields, mark) in sorted(was.items()):
            if v not in now:
                self.add(
                    mark,
                    "PREVIOUS_REMOVED",
                    f"Version {v} of `{name}` is no longer declared (keep it under `previous`): "
                    "messages of it may still be queued",
                )
                continue
            owner = name if v == new.version else f"{name}V{v}"
            self.fields(owner, fields, now[v], versioned=v == new.version)
        self.result(name, old, new)


def compare(old: list[Schema], new: list[Schema]) -> list[Finding]:
    """Every breaking change from `old` to `new`, in file order."""
    c = _Compare()
    now = {s.domain: s for s in new}
    for o in old:
        n = now.get(o.domain)
        if n is None:
            c.add(o.mark, "DOMAIN_REMOVED", f"Domain `{o.domain}` was removed")
            continue
        types = {t.name: t for t in n.types}
        for t in o.types:
            if t.name in types:
                c.type(t, types[t.name])
            else:
                c.add(t.mark, "TYPE_REMOVED", f"Type `{o.domain}.{t.name}` was removed")
        commands = {cmd.name: cmd for cmd in n.commands}
        for cmd in n.commands:
            for kind, _ in cmd.aliases:
                commands.setdefault(kind.partition(".")[2], cmd)
        for cmd in o.commands:
            target = commands.get(cmd.name)
            if target is None:
                c.add(
                    cmd.mark,
                    "COMMAND_REMOVED",
                    f"Command `{o.domain}.{cmd.name}` was removed or renamed without an alias "
                    f"(add `aliases: [{o.domain}.{cmd.name}]` to the new name)",
                )
            else:
                c.command(cmd, target)
    return sorted(c.found, key=lambda f: (f.mark.file, f.mark.line, f.mark.col))
