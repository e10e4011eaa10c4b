"""Schema nodes to checked definitions, with every error found in one pass.

Each problem becomes one `FILE:LINE:COL: message`, worded as msgspec words its own
("Expected `int` >= 1, got `0`") and with a "did you mean" hint where a key or a
type name is close to a known one. Checks that need all files at once (cross-file
references, duplicate domains, cycles by value, defaults that build themselves) run
after every file has been read. Domains may refer to each other's types in a cycle;
only a type that holds itself by value, in one domain or across several, is refused.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import datetime
import decimal
import difflib
import keyword
import math
import re
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .load import Map, Mark, Node, Scalar, Seq, one_line

__all__ = [
    "CommandDef",
    "FieldDef",
    "Problems",
    "ResultDef",
    "Schema",
    "TypeDef",
    "TypeRef",
    "validate",
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

TOP_KEYS = ("cbus", "domain", "description", "options", "types", "commands")
TYPE_KEYS = ("description", "fields", "enum")
COMMAND_KEYS = ("description", "version", "fields", "result", "errors", "options")
RESULT_KEYS = ("description", "fields")
OPTION_KEYS = ("max_attempts", "backoff", "visibility_timeout", "timeout")
FIELD_KEYS = ("type", "default", "description", *CONSTRAINTS)


class Problems:
    """Errors collected across files, reported sorted by file and position."""

    def __init__(self, order: Sequence[str] = ()) -> None:
        self.items: list[tuple[Mark, str]] = []
        self.order = {f: i for i, f in enumerate(order)}

    def add(self, mark: Mark, message: str) -> None:
        self.items.append((mark, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def messages(self) -> list[str]:
        ordered = sorted(
            set(self.items),
            key=lambda p: (
                self.order.get(p[0].file, len(self.order)),
                p[0].file,
                p[0].line,
                p[0].col,
                p[1],
            ),
        )
        # One line each: a key or value echoed from the schema may hold a line break.
        return [one_line(f"{m}: {msg}") for m, msg in ordered]


# -- definitions -------------------------------------------------------------------


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
class CommandDef:
    name: str
    mark: Mark
    description: str = ""
    version: int = 1
    fields: list[FieldDef] = field(default_factory=list)
    result: ResultDef | None = None
    errors: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


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

    def all_fields(self) -> Iterable[FieldDef]:
        for t in self.types:
            yield from t.fields or ()
        for c in self.commands:
            yield from c.fields
            if c.result is not None:
                yield from c.result.fields


# -- helpers -----------------------------------------------------------------------


def kind_of(node: Node | None) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, Map):
        return "mapping"
    if isinstance(node, Seq):
        return "list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, bytes):
        return "bytes"
    return "str"


def hint(word: str, choices: Iterable[str]) -> str:
    """` (did you mean `x`?)` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _joined(words: Sequence[str]) -> str:
    quoted = [f"`{w}`" for w in words]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class _FileChecker:
    def __init__(self, problems: Problems, file: str) -> None:
        self.p = problems
        self.file = file

    def err(self, mark: Mark, message: str) -> None:
        self.p.add(mark, message)

    def keys(self, node: Map, allowed: Sequence[str]) -> None:
        for k, _ in node.items:
            if k.text not in allowed:
                h = hint(k.text, allowed)
                more = h or f" (expected one of {_joined(allowed)})"
                self.err(k.mark, f"Unknown key `{k.text}`{more}")

    def mapping(self, node: Node | None, what: str) -> Map | None:
        if isinstance(node, Map):
            return node
        if node is not None:
            self.err(node.mark, f"Expected `mapping` for {what}, got `{kind_of(node)}`")
        return None

    def text(self, node: Node | None, what: str) -> str | None:
        """A name as written: YAML may resolve `yes` to a bool, the text is what counts."""
        if node is None:
            return None
        if isinstance(node, Scalar) and node.value is not None:
            return node.text
        self.err(node.mark, f"Expected `str` for {what}, got `{kind_of(node)}`")
        return None

    def description(self, node: Map) -> str:
        d = node.get("description")
        if d is None:
            return ""
        if isinstance(d, Scalar) and d.value is None:
            return ""
        if not isinstance(d, Scalar) or not isinstance(d.value, str):
            if isinstance(d, Scalar):
                return d.text.strip()
            self.err(d.mark, f"Expected `str` for `description`, got `{kind_of(d)}`")
            return ""
        return d.value.strip()

    def integer(self, node: Node, what: str, minimum: int) -> int | None:
        if (
            not isinstance(node, Scalar)
            or isinstance(node.value, bool)
            or not isinstance(node.value, int)
        ):
            self.err(node.mark, f"Expected `int` >= {minimum} for `{what}`, got `{kind_of(node)}`")
            return None
        if node.value < minimum:
            self.err(node.mark, f"Expected `int` >= {minimum} for `{what}`, got `{node.value}`")
            return None
        return int(node.value)

    def seconds(self, node: Node, what: str) -> int | float | None:
        """A positive, finite number of seconds (int or float)."""
        v = node.value if isinstance(node, Scalar) else None
        if not isinstance(node, Scalar) or isinstance(v, bool) or not isinstance(v, int | float):
            self.err(node.mark, f"Expected seconds > 0 for `{what}`, got `{kind_of(node)}`")
            return None
        if not math.isfinite(v) or v <= 0:
            self.err(node.mark, f"Expected seconds > 0 for `{what}`, got `{node.text}`")
            return None
        return v

    # -- options ---------------------------------------------------------------------

    def options(self, node: Node | None) -> dict[str, Any]:
        m = self.mapping(node, "`options`")
        if m is None:
            return {}
        self.keys(m, OPTION_KEYS)
        out: dict[str, Any] = {}
        for key in ("max_attempts", "visibility_timeout"):
            v = m.get(key)
            if v is not None:
                i = self.integer(v, key, 1)
                if i is not None:
                    out[key] = i
        t = m.get("timeout")
        if t is not None:
            seconds = self.seconds(t, "timeout")
            if seconds is not None:
                out["timeout"] = seconds
        b = m.get("backoff")
        if b is not None:
            if not isinstance(b, Seq):
                self.err(b.mark, f"Expected `list` of seconds for `backoff`, got `{kind_of(b)}`")
            else:
                values: list[float] = []
                for item in b.items:
                    v = item.value if isinstance(item, Scalar) else None
                    if (
                        isinstance(v, bool)
                        or not isinstance(v, int | float)
                        or not math.isfinite(v)
                        or v < 0
                    ):
                        found = (
                            v
                            if isinstance(v, int | float) and not isinstance(v, bool)
                            else (f"`{kind_of(item)}`")
                        )
                        shown = f"`{found}`" if not isinstance(found, str) else found
                        self.err(item.mark, f"Expected a number >= 0 for `backoff`, got {shown}")
                    else:
                        values.append(float(v))
                if len(values) == len(b.items):
                    out["backoff"] = tuple(values)
        return out

    # -- types -----------------------------------------------------------------------

    def parse_type(self, node: Node | None, locals_: set[str]) -> TypeRef | None:
        if node is None:
            return None
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            self.err(node.mark, f"Expected a type name, got `{kind_of(node)}`")
            return None
        text = node.text.strip()
        try:
            ref, rest = _parse(text, 0)
        except _ParseError as exc:
            self.err(node.mark, f"Invalid type `{text}`: {exc}")
            return None
        if rest != len(text):
            self.err(node.mark, f"Invalid type `{text}`: unexpected `{text[rest:]}`")
            return None
        _set_marks(ref, node.mark)
        return ref

    def fields(self, node: Node | None, owner: str, *, command: bool) -> list[FieldDef]:
        if node is None:
            return []
        m = self.mapping(node, f"the fields of `{owner}`")
        if m is None:
            return []
        out: list[FieldDef] = []
        for key, value in m.items:
            f = self.field(key, value, command=command)
            if f is not None:
                out.append(f)
        return out

    def field(self, key: Scalar, value: Node, *, command: bool) -> FieldDef | None:
        name = key.text
        ok = True
        if not FIELD_RE.match(name):
            self.err(key.mark, f"Invalid field name `{name}`: expected ^[a-z][a-z0-9_]*$")
            ok = False
        elif keyword.iskeyword(name):
            self.err(key.mark, f"Field name `{name}` is a Python keyword")
            ok = False
        elif command and name in SENDER_PARAMS:
            self.err(
                key.mark,
                f"Field name `{name}` is reserved: it is a parameter of every generated sender",
            )
            ok = False
        elif name in GENERATED_NAMES:
            self.err(
                key.mark,
                f"Field name `{name}` is reserved: it would shadow `{name}` in the generated code",
            )
            ok = False
        if isinstance(value, Map):
            self.keys(value, FIELD_KEYS)
            tnode = value.get("type")
            if tnode is None:
                self.err(value.mark, f"Missing required key `type` in field `{name}`")
                return None
            ref = self.parse_type(tnode, set())
            f = FieldDef(name, ref or TypeRef("scalar", "any"), key.mark)
            f.description = self.description(value)
            for c in CONSTRAINTS:
                cnode = value.get(c)
                if cnode is not None:
                    f.constraints[c] = cnode
            d = value.key("default")
            if d is not None:
                f.has_default = True
                f.default_node = value.get("default")
            if ref is None:
                return None
        else:
            ref = self.parse_type(value, set())
            if ref is None:
                return None
            f = FieldDef(name, ref, key.mark)
        return f if ok else None


class _ParseError(Exception):
    pass


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def _parse(text: str, pos: int) -> tuple[TypeRef, int]:
    """Parse `T`, `T?`, `list[T]`, `dict[string, T]` from `pos`; returns (ref, end)."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    m = _IDENT.match(text, pos)
    if m is None:
        found = text[pos:] or "the end"
        raise _ParseError(f"expected a type name at `{found}`")
    name = m.group(0)
    pos = m.end()
    if name in ("list", "dict") and pos < len(text) and text[pos] == "[":
        pos += 1
        if name == "dict":
            key, pos = _parse(text, pos)
            if str(key) != "string":
                raise _ParseError(f"dict keys must be `string`, got `{key}`")
            pos = _expect(text, pos, ",")
        item, pos = _parse(text, pos)
        pos = _expect(text, pos, "]")
        ref = TypeRef(name, item=item)
    elif name in ("list", "dict"):
        example = "list[T]" if name == "list" else "dict[string, T]"
        raise _ParseError(f"`{name}` needs an item type, as in `{example}`")
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
        raise _ParseError(f"expected `{char}`, got `{found}`")
    return pos + 1


def _set_marks(ref: TypeRef, mark: Mark) -> None:
    ref.mark = mark
    if ref.item is not None:
        _set_marks(ref.item, mark)


def _walk(ref: TypeRef) -> Iterable[TypeRef]:
    yield ref
    if ref.item is not None:
        yield from _walk(ref.item)


# -- one file ----------------------------------------------------------------------


def _check_file(root: Node, file: str, source: str, p: Problems) -> Schema | None:
    c = _FileChecker(p, file)
    top = c.mapping(root, "a schema file")
    if top is None:
        return None
    c.keys(top, TOP_KEYS)
    version = top.get("cbus")
    if version is None:
        c.err(top.mark, "Missing required key `cbus` (the format version: add `cbus: 1`)")
    elif not (isinstance(version, Scalar) and version.text == str(FORMAT_VERSION)):
        shown = version.text if isinstance(version, Scalar) else kind_of(version)
        c.err(
            version.mark,
            f"Unsupported format version `{shown}` (this cbgen reads `cbus: {FORMAT_VERSION}`)",
        )
    dnode = top.get("domain")
    domain = ""
    if dnode is None:
        c.err(top.mark, "Missing required key `domain`")
    else:
        d = c.text(dnode, "`domain`")
        if d is not None:
            if not DOMAIN_RE.match(d):
                c.err(dnode.mark, f"Invalid domain name `{d}`: expected ^[a-z][a-z0-9_]{{0,29}}$")
            elif keyword.iskeyword(d):
                c.err(dnode.mark, f"Domain name `{d}` is a Python keyword")
            else:
                domain = d
    schema = Schema(
        file=file,
        source=source,
        domain=domain,
        mark=dnode.mark if dnode is not None else top.mark,
        description=c.description(top),
        options=c.options(top.get("options")),
    )
    types = c.mapping(top.get("types"), "`types`")
    if types is not None:
        for key, value in types.items:
            t = _check_type(c, key, value, domain)
            if t is not None:
                schema.types.append(t)
    cnode = top.get("commands")
    if cnode is None:
        c.err(top.mark, "Missing required key `commands`")
    else:
        commands = c.mapping(cnode, "`commands`")
        if commands is not None and not commands.items:
            c.err(commands.mark, "Expected at least one command in `commands`")
        if commands is not None:
            for key, value in commands.items:
                cmd = _check_command(c, key, value)
                if cmd is not None:
                    schema.commands.append(cmd)
    return schema


def _class_name(c: _FileChecker, key: Scalar, what: str) -> bool:
    """Check a type or command name; False when it is unusable even as a reference.

    A keyword or a builtin is reported but still defined, so references to it
    resolve and only the name is reported. Every builtin is refused, not only those
    the generated code calls (`NotImplementedError`): `from shop.orders import *`
    would shadow them.
    """
    name = key.text
    if not NAME_RE.match(name):
        c.err(key.mark, f"Invalid {what} name `{name}`: expected ^[A-Z][A-Za-z0-9]*$")
        return False
    if keyword.iskeyword(name):
        c.err(key.mark, f"{what.capitalize()} name `{name}` is a Python keyword")
    elif hasattr(builtins, name):
        c.err(
            key.mark,
            f"{what.capitalize()} name `{name}` is reserved: "
            f"it would shadow the Python builtin `{name}`",
        )
    return True


def _check_type(c: _FileChecker, key: Scalar, value: Node, domain: str) -> TypeDef | None:
    name = key.text
    if not _class_name(c, key, "type"):
        return None
    m = c.mapping(value, f"type `{name}`")
    if m is None:
        return None
    c.keys(m, TYPE_KEYS)
    t = TypeDef(name, domain, key.mark, description=c.description(m))
    has_fields, has_enum = m.get("fields") is not None, m.get("enum") is not None
    if has_fields == has_enum:
        c.err(m.mark, f"Type `{name}` needs exactly one of `fields` or `enum`")
        return None
    if has_fields:
        t.fields = c.fields(m.get("fields"), name, command=False)
        return t
    enode = m.get("enum")
    if not isinstance(enode, Seq) or not enode.items:
        assert enode is not None
        c.err(
            enode.mark, f"Expected a non-empty `list` of strings for `enum`, got `{kind_of(enode)}`"
        )
        return None
    values: list[str] = []
    members: dict[str, Mark] = {}
    for item in enode.items:
        v = c.text(item, "an enum value")
        if v is None:
            continue
        if not ENUM_RE.match(v):
            c.err(item.mark, f"Invalid enum value `{v}`: expected ^[A-Za-z][A-Za-z0-9_]*$")
            continue
        upper = v.upper()
        if upper in members:
            c.err(
                item.mark,
                f"Enum value `{v}` repeats member `{upper}` "
                f"(first defined at {members[upper].short()})",
            )
            continue
        members[upper] = item.mark
        values.append(v)
    t.enum = values
    return t


def _check_command(c: _FileChecker, key: Scalar, value: Node) -> CommandDef | None:
    name = key.text
    if not _class_name(c, key, "command"):
        return None
    if isinstance(value, Scalar) and value.value is None:
        return CommandDef(name, key.mark)
    m = c.mapping(value, f"command `{name}`")
    if m is None:
        return None
    c.keys(m, COMMAND_KEYS)
    cmd = CommandDef(name, key.mark, description=c.description(m))
    v = m.get("version")
    if v is not None:
        cmd.version = c.integer(v, "version", 1) or 1
    cmd.fields = c.fields(m.get("fields"), name, command=True)
    r = m.get("result")
    if r is not None:
        rm = c.mapping(r, f"the result of `{name}`")
        if rm is not None:
            c.keys(rm, RESULT_KEYS)
            cmd.result = ResultDef(rm.mark, description=c.description(rm))
            cmd.result.fields = c.fields(rm.get("fields"), f"{name}Result", command=False)
    e = m.get("errors")
    if e is not None:
        if not isinstance(e, Seq):
            c.err(e.mark, f"Expected `list` of error codes for `errors`, got `{kind_of(e)}`")
        else:
            seen: dict[str, Mark] = {}
            for item in e.items:
                code = c.text(item, "an error code")
                if code is None:
                    continue
                if not CODE_RE.match(code):
                    c.err(item.mark, f"Invalid error code `{code}`: expected ^[A-Z][A-Z0-9_]*$")
                elif code in seen:
                    c.err(
                        item.mark,
                        f"Duplicate error code `{code}` (first defined at {seen[code].short()})",
                    )
                else:
                    seen[code] = item.mark
                    cmd.errors.append(code)
    cmd.options = c.options(m.get("options"))
    return cmd


# -- all files ---------------------------------------------------------------------


class _Resolver:
    def __init__(self, schemas: list[Schema], p: Problems) -> None:
        self.p = p
        self.schemas = schemas
        self.by_domain: dict[str, Schema] = {}
        for s in schemas:
            if not s.domain:
                continue
            first = self.by_domain.get(s.domain)
            if first is not None:
                p.add(s.mark, f"Duplicate domain `{s.domain}` (first defined at {first.mark})")
                continue
            self.by_domain[s.domain] = s

    def types_of(self, domain: str) -> dict[str, TypeDef]:
        s = self.by_domain.get(domain)
        return {t.name: t for t in s.types} if s is not None else {}

    def resolve(self, schema: Schema, ref: TypeRef) -> bool:
        ok = True
        for r in _walk(ref):
            if r.kind != "named":
                continue
            assert r.mark is not None
            if "." in r.name:
                dom, _, tname = r.name.partition(".")
                other = self.by_domain.get(dom)
                if other is None:
                    # No close name: most likely its schema was left off the command line.
                    h = hint(dom, self.by_domain) or (
                        f" (pass the schema file that defines `{dom}`, or its folder, too)"
                    )
                    self.p.add(r.mark, f"Unknown domain `{dom}` in type `{r.name}`{h}")
                    ok = False
                    continue
                t = self.types_of(dom).get(tname)
                if t is None:
                    h = hint(r.name, [f"{dom}.{n}" for n in self.types_of(dom)])
                    self.p.add(r.mark, f"Unknown type `{r.name}`{h}")
                    ok = False
                    continue
                r.domain, r.target = dom, t
                if dom != schema.domain:
                    schema.imports.setdefault(dom, r.mark)
            else:
                local = {t.name: t for t in schema.types}
                t = local.get(r.name)
                if t is None:
                    others = [
                        f"{d}.{n}"
                        for d in self.by_domain
                        for n in self.types_of(d)
                        if d != schema.domain
                    ]
                    h = hint(r.name, [*SCALARS, *local, *others])
                    self.p.add(r.mark, f"Unknown type `{r.name}`{h}")
                    ok = False
                    continue
                r.domain, r.target = schema.domain, t
        return ok


def _check_constraints(f: FieldDef, p: Problems) -> None:
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
                    f"Expected one of {_joined(t.enum)}, got `{node.text}`{where}"
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


def _check_default(f: FieldDef, p: Problems) -> None:
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


def _value_cycles(schemas: list[Schema], p: Problems) -> None:
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


def _default_cycles(schemas: list[Schema], p: Problems) -> None:
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


def validate(files: Sequence[tuple[str, str, Node | None]], problems: Problems) -> list[Schema]:
    """Check loaded files: (display name, header name, root node) each."""
    schemas: list[Schema] = []
    for file, source, root in files:
        if root is None:
            continue
        s = _check_file(root, file, source, problems)
        if s is not None:
            schemas.append(s)
    r = _Resolver(schemas, problems)
    resolved: list[FieldDef] = []
    for s in schemas:
        names: dict[str, Mark] = {}
        for t in s.types:
            names[t.name] = t.mark
        for cmd in s.commands:
            if cmd.name in names:
                problems.add(
                    cmd.mark,
                    f"Command `{cmd.name}` has the name of a type "
                    f"(defined at {names[cmd.name].short()})",
                )
        for f in s.all_fields():
            if r.resolve(s, f.type):
                resolved.append(f)
    for f in resolved:
        _check_constraints(f, problems)
    for f in resolved:
        _check_default(f, problems)
    ok = {id(f) for f in resolved}
    for f in (f for s in schemas for f in s.all_fields()):
        if id(f) not in ok:
            f.has_default = False
            f.constraints = {}
    _value_cycles(schemas, problems)
    _default_cycles(schemas, problems)
    return schemas
