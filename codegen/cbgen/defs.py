"""The intermediate model: what a checked schema file becomes, and the schema
language's vocabulary (keys, scalar types, name patterns).

The checks (`per_file`, `resolve`, `values`, `cycles`) fill these objects in;
`model` turns them into Python. Nothing here checks anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .load import Map, Mark, Node

__all__ = [
    "CODE_RE",
    "COMMAND_KEYS",
    "CONSTRAINTS",
    "CommandDef",
    "DOMAIN_RE",
    "ENUM_RE",
    "FIELD_KEYS",
    "FIELD_RE",
    "FORMAT_VERSION",
    "FieldDef",
    "GENERATED_NAMES",
    "INT64",
    "KEY_OPTIONS",
    "KeyOption",
    "RATE_UNITS",
    "RateLimitDef",
    "LENGTH",
    "NAME_RE",
    "NUMERIC",
    "OPTION_KEYS",
    "PREVIOUS_KEYS",
    "PreviousDef",
    "RESULT_KEYS",
    "ResultDef",
    "SCALARS",
    "ScheduleDef",
    "SENDER_PARAMS",
    "Schema",
    "TOP_KEYS",
    "TYPE_KEYS",
    "TypeDef",
    "TypeRef",
]


FORMAT_VERSION = 1
SCALARS = (
    "string",
    "int",
    "float",
    "bool",
    "decimal",
    "uuid",
    "datetime",
    "date",
    "time",
    "bytes",
    "any",
)
NUMERIC = ("ge", "gt", "le", "lt")
LENGTH = ("min_length", "max_length")
CONSTRAINTS = (*NUMERIC, *LENGTH, "pattern")
SENDER_PARAMS = ("target", "command_id", "correlation_id", "reply_to", "delay")
# Names the generated modules use in class bodies and senders: a field of that name
# would shadow them once its annotation or default is evaluated.
GENERATED_NAMES = (
    "cbus",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "msgspec",
    "psycopg",
    "typing",
    "uuid",
    "bool",
    "bytes",
    "dict",
    "float",
    "int",
    "list",
    "str",
)

INT64 = (-(2**63), 2**63 - 1)

DOMAIN_RE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
NAME_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")
CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENUM_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

TOP_KEYS = ("cbus", "domain", "description", "options", "types", "commands", "schedules")
TYPE_KEYS = ("description", "fields", "enum")
COMMAND_KEYS = (
    "description",
    "version",
    "fields",
    "result",
    "errors",
    "options",
    "previous",
    "aliases",
)
PREVIOUS_KEYS = ("description", "fields")
RESULT_KEYS = ("description", "fields")
OPTION_KEYS = (
    "max_attempts",
    "backoff",
    "visibility_timeout",
    "timeout",
    "unknown_version_grace",
    "priority",
    "ordering_key",
    "rate_limit",
    "rate_limit_key",
    "retention",
)
RETENTION_KEYS = ("completed", "failed", "canceled", "audit", "archive")
"""The keys of the `retention` option (contract section 9)."""
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
KEY_OPTIONS = ("ordering_key", "rate_limit_key")
"""Options that name a field of the command: checked once types are resolved."""
RATE_UNITS = {"s": 1, "m": 60, "h": 3600}
FIELD_KEYS = ("type", "default", "description", "renamed_from", *CONSTRAINTS)


@dataclass(frozen=True)
class KeyOption:
    """An option that names a field (`ordering_key`, `rate_limit_key`), where written."""

    field: str
    mark: Mark


@dataclass(frozen=True)
class RateLimitDef:
    """`rate_limit: "100/s"`: at most `count` starts per `per_seconds`."""

    count: int
    per_seconds: int
    text: str
    mark: Mark


@dataclass(eq=False)
class TypeRef:
    """A parsed type expression such as `list[LineItem]?` or `orders.Money`."""

    kind: str  # "scalar" | "list" | "dict" | "named"
    name: str = ""  # the scalar, or the named type as written
    item: TypeRef | None = None
    nullable: bool = False
    mark: Mark | None = None
    domain: str = ""  # named: the domain that defines it (after resolution)
    target: TypeDef | None = None  # named: the definition (after resolution)

    def __str__(self) -> str:
        if self.kind == "list":
            s = f"list[{self.item}]"
        elif self.kind == "dict":
            s = f"dict[string, {self.item}]"
        else:
            s = self.name
        return s + ("?" if self.nullable else "")

    def base(self) -> str:
        """The type without its `?`, as written."""
        return str(self).removesuffix("?")


@dataclass(eq=False)
class FieldDef:
    name: str
    type: TypeRef
    mark: Mark
    description: str = ""
    constraints: dict[str, Any] = field(default_factory=dict)
    has_default: bool = False
    default: Any = None  # checked and normalised (see `_value`)
    default_node: Node | None = None
    renamed_from: str = ""  # the name this field had in the version before

    @property
    def required(self) -> bool:
        return not self.has_default and not self.type.nullable


@dataclass(eq=False)
class TypeDef:
    name: str
    domain: str
    mark: Mark
    description: str = ""
    fields: list[FieldDef] | None = None
    enum: list[str] | None = None


@dataclass(eq=False)
class ResultDef:
    mark: Mark
    description: str = ""
    fields: list[FieldDef] = field(default_factory=list)


@dataclass(eq=False)
class PreviousDef:
    """An earlier version of a command, kept so its queued messages still decode."""

    version: int
    mark: Mark
    description: str = ""
    fields: list[FieldDef] = field(default_factory=list)


@dataclass(eq=False)
class CommandDef:
    name: str
    mark: Mark
    description: str = ""
    version: int = 1
    fields: list[FieldDef] = field(default_factory=list)
    result: ResultDef | None = None
    errors: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    previous: list[PreviousDef] = field(default_factory=list)  # oldest first
    aliases: list[tuple[str, Mark]] = field(default_factory=list)  # earlier kinds


@dataclass(eq=False)
class ScheduleDef:
    """A schedule: send `command` with `fields` at each firing of `cron` in `timezone`."""

    name: str
    mark: Mark
    cron: str
    command: str
    command_mark: Mark
    timezone: str = "UTC"
    catch_up: int = 1
    fields_node: Map | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # JSON-ready, once checked


@dataclass(eq=False)
class Schema:
    """One schema file, checked: one domain."""

    file: str  # as shown in messages
    source: str  # as named in the generated header
    domain: str
    mark: Mark
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    types: list[TypeDef] = field(default_factory=list)
    commands: list[CommandDef] = field(default_factory=list)
    imports: dict[str, Mark] = field(default_factory=dict)  # domain -> first reference
    schedules: list[ScheduleDef] = field(default_factory=list)

    def all_fields(self) -> Iterable[FieldDef]:
        for t in self.types:
            yield from t.fields or ()
        for c in self.commands:
            yield from c.fields
            for prev in c.previous:
                yield from prev.fields
            if c.result is not None:
                yield from c.result.fields
