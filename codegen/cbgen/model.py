"""Checked schemas to the Python they become: every name and expression decided here.

Templates only loop and branch over these objects; nothing in them invents a name.
`check_names` reports the generated names that would collide, as schema errors.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import keyword
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import RUNTIME_API, RUNTIME_OPTIONS, __version__
from .load import Mark
from .validate import CommandDef, FieldDef, Problems, Schema, TypeRef

__all__ = [
    "Command",
    "Enum",
    "ErrorClass",
    "Field",
    "Module",
    "Package",
    "Struct",
    "build",
    "check_names",
    "snake_case",
]

MODEL_STYLES = ("dataclass", "struct")
FALLBACK_DOC = "No description in {source}."
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
# Attributes of BusinessError and Exception that an error-code classmethod must not hide.
ERROR_RESERVED = ("code", "message", "details", "args", "with_traceback", "add_note")

_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`CreateOrder` -> `create_order`, `HTTPPing` -> `http_ping`."""
    return _SNAKE.sub("_", name).lower()


def camel_case(domain: str) -> str:
    """`order_items` -> `OrderItems`."""
    return "".join(part[:1].upper() + part[1:] for part in domain.split("_"))


def docstring(text: str) -> str:
    """Text safe between triple quotes, lines stripped of trailing blanks."""
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    if "\n" in text:
        text += "\n"  # the closing quotes on a line of their own
    return text


# -- model objects -----------------------------------------------------------------


@dataclass
class Field:
    name: str
    annotation: str
    doc: str
    required: bool
    default: str | None = None  # class-body default expression
    factory: bool = False  # default built per instance (default_factory=lambda: ...)
    sender_annotation: str = ""
    sender_default: str | None = None
    builder_value: str = ""  # expression the private builder passes on
    ref: TypeRef | None = None
    constraints: dict[str, Any] = field(default_factory=dict)
    doc_type: str = ""
    doc_default: str = ""


@dataclass
class Struct:
    name: str
    doc: str
    fields: list[Field]


@dataclass
class Enum:
    name: str
    doc: str
    members: list[tuple[str, str]]  # (MEMBER, "value")


@dataclass
class ErrorClass:
    name: str
    command: str
    codes: list[tuple[str, str]]  # (CODE, classmethod name)

    @property
    def literal(self) -> str:
        return "typing.Literal[" + ", ".join(f'"{c}"' for c, _ in self.codes) + "]"


@dataclass
class Command:
    name: str
    kind: str
    version: int
    doc: str
    description: str
    struct: Struct
    method: str
    sender: str
    sender_async: str
    builder: str
    waiter: str
    waiter_async: str
    reader: str
    result: Struct | None
    error: ErrorClass | None
    errors: list[str]
    options: str
    effective_options: dict[str, Any]
    """The runtime's defaults overlaid by the domain's and the command's options."""

    @property
    def return_type(self) -> str:
        return self.result.name if self.result is not None else "None"


@dataclass
class Module:
    domain: str
    source: str
    header: str
    doc: str
    description: str
    models: str
    queue: str
    stdlib_imports: list[str]
    third_imports: list[str]
    from_imports: list[str]
    api: int
    version: str
    enums: list[Enum]
    structs: list[Struct]
    commands: list[Command]
    handlers: str
    async_handlers: str
    options: str
    effective_options: dict[str, Any]
    """The runtime's defaults overlaid by the domain's options."""
    all: list[str]

    @property
    def filename(self) -> str:
        return f"{self.domain}.py"


@dataclass
class Package:
    name: str
    models: str
    modules: list[Module]
    header: str
    doc: str
    version: str = __version__


# -- expressions -------------------------------------------------------------------


class _Ctx:
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
            return f"{ref.domain}.{ref.target.name}"
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
            args = ", ".join(f"{k}={_py_repr(v)}" for k, v in constraints.items())
            py = f"typing.Annotated[{py}, msgspec.Meta({args})]"
        if ref.nullable:
            py += " | None"
        return py

    def literal(self, ref: TypeRef, value: Any) -> str:
        """The Python expression of a checked default (see `validate._value`)."""
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
            return _py_repr(value)
        if isinstance(value, decimal.Decimal):
            self.stdlib.add("decimal")
            return f'decimal.Decimal("{value}")'
        if isinstance(value, uuid.UUID):
            self.stdlib.add("uuid")
            return f'uuid.UUID("{value}")'
        if isinstance(value, datetime.datetime):
            parts = [value.year, value.month, value.day, value.hour, value.minute, value.second]
            return _datetime("datetime.datetime", parts, value.microsecond, value.tzinfo)
        if isinstance(value, datetime.date):
            return f"datetime.date({value.year}, {value.month}, {value.day})"
        if isinstance(value, datetime.time):
            parts = [value.hour, value.minute, value.second]
            return _datetime("datetime.time", parts, value.microsecond, value.tzinfo)
        if isinstance(value, bytes):
            return repr(value)
        return _py_repr(value)


def _datetime(fn: str, parts: list[int], micro: int, tz: datetime.tzinfo | None) -> str:
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


def _py_repr(value: Any) -> str:
    """A deterministic Python literal of a JSON-like value."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_py_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py_repr(k)}: {_py_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _is_factory(ref: TypeRef, value: Any) -> bool:
    """Defaults built per instance: mutable ones, and calls ruff's B008 would flag."""
    if value is None:
        return False
    if ref.kind in ("list", "dict") or isinstance(value, list | dict):
        return True
    if ref.kind == "named" and ref.target is not None and ref.target.fields is not None:
        return True
    return ref.kind == "scalar" and ref.name == "uuid"


def _doc_default(f: FieldDef) -> str:
    if f.has_default:
        v = f.default
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, bytes):
            return base64.b64encode(v).decode()
        if isinstance(v, datetime.date | datetime.time):
            return v.isoformat()
        return _py_repr(v) if isinstance(v, list | dict) else str(v)
    return "null" if f.type.nullable else ""


def _field(ctx: _Ctx, f: FieldDef) -> Field:
    annotation = ctx.annotation(f.type, f.constraints)
    out = Field(
        name=f.name,
        annotation=annotation,
        doc=docstring(f.description),
        required=f.required,
        ref=f.type,
        constraints=dict(f.constraints),
        doc_type=str(f.type),
        doc_default=_doc_default(f),
        sender_annotation=annotation,
        builder_value=f.name,
    )
    if f.required:
        return out
    expr = ctx.literal(f.type, f.default if f.has_default else None)
    lib = "dataclasses" if ctx.models == "dataclass" else "msgspec"
    if _is_factory(f.type, f.default if f.has_default else None):
        if lib == "dataclasses":
            ctx.stdlib.add("dataclasses")
        out.factory = True
        factory = {"[]": "list", "{}": "dict"}.get(expr, f"lambda: {expr}")
        out.default = f"{lib}.field(default_factory={factory})"
        # A sender cannot take a mutable or computed default: None stands for it.
        out.sender_annotation = f"{annotation} | None"
        out.sender_default = "None"
        out.builder_value = f"{expr} if {f.name} is None else {f.name}"
    else:
        out.default = expr
        out.sender_default = expr
    return out


def _ordered(fields: list[Field]) -> list[Field]:
    return [f for f in fields if f.required] + [f for f in fields if not f.required]


def _options(ctx: _Ctx, values: dict[str, Any]) -> str:
    args = []
    for key in ("max_attempts", "backoff", "visibility_timeout"):
        if key in values:
            v = values[key]
            if key == "backoff":
                inner = ", ".join(repr(float(x)) for x in v)
                v = f"({inner},)" if len(v) == 1 else f"({inner})"
            args.append(f"{key}={v}")
    return f"cbus.registry.Options({', '.join(args)})"


def _effective(values: dict[str, Any]) -> dict[str, Any]:
    """Every option with the value the runtime will use, in a fixed order."""
    return {key: values.get(key, default) for key, default in RUNTIME_OPTIONS.items()}


def _doc(description: str, source: str) -> str:
    return docstring(description) if description else FALLBACK_DOC.format(source=source)


def _module(s: Schema, package: str, models: str) -> Module:
    ctx = _Ctx(s.domain, models)
    if models == "dataclass":
        ctx.stdlib.add("dataclasses")
    enums: list[Enum] = []
    structs: list[Struct] = []
    for t in s.types:
        if t.enum is not None:
            ctx.stdlib.add("enum")
            enums.append(
                Enum(t.name, _doc(t.description, s.source), [(v.upper(), v) for v in t.enum])
            )
        else:
            fields = _ordered([_field(ctx, f) for f in t.fields or ()])
            structs.append(Struct(t.name, _doc(t.description, s.source), fields))
    commands = [_command(ctx, s, c) for c in s.commands]
    prefix = camel_case(s.domain)
    names: list[str] = [e.name for e in enums] + [st.name for st in structs]
    for cmd in commands:
        names.append(cmd.name)
        if cmd.result is not None:
            names.append(cmd.result.name)
        if cmd.error is not None:
            names.append(cmd.error.name)
    names += [f"{prefix}Handlers", f"{prefix}AsyncHandlers", "DOMAIN"]
    for cmd in commands:
        names += [cmd.sender, cmd.sender_async, cmd.reader, cmd.waiter, cmd.waiter_async]
    names += ["install", "install_async"]
    stdlib = sorted(ctx.stdlib)
    third = ["cbus", "cbus.registry"] + (["msgspec"] if ctx.msgspec else []) + ["psycopg"]
    return Module(
        domain=s.domain,
        source=s.source,
        header=f"# Generated by cbgen {__version__} from {s.source}. DO NOT EDIT.",
        doc=_doc(s.description, s.source),
        description=s.description,
        models=models,
        queue=f"{s.domain}__commands",
        stdlib_imports=stdlib,
        third_imports=third,
        from_imports=sorted(ctx.domains),
        api=RUNTIME_API,
        version=__version__,
        enums=enums,
        structs=structs,
        commands=commands,
        handlers=f"{prefix}Handlers",
        async_handlers=f"{prefix}AsyncHandlers",
        options=_options(ctx, s.options),
        effective_options=_effective(s.options),
        all=names,
    )


def _command(ctx: _Ctx, s: Schema, c: CommandDef) -> Command:
    fields = _ordered([_field(ctx, f) for f in c.fields])
    result = None
    if c.result is not None:
        rfields = _ordered([_field(ctx, f) for f in c.result.fields])
        rdoc = c.result.description or f"What the `{c.name}` handler returns."
        result = Struct(f"{c.name}Result", docstring(rdoc), rfields)
    error = None
    if c.errors:
        error = ErrorClass(f"{c.name}Error", c.name, [(e, e.lower()) for e in c.errors])
    method = snake_case(c.name)
    merged = {**s.options, **c.options}
    return Command(
        name=c.name,
        kind=f"{s.domain}.{c.name}",
        version=c.version,
        doc=_doc(c.description, s.source),
        description=c.description,
        struct=Struct(c.name, _doc(c.description, s.source), fields),
        method=method,
        sender=f"send_{method}",
        sender_async=f"send_{method}_async",
        builder=f"_{method}",
        waiter=f"wait_{method}",
        waiter_async=f"wait_{method}_async",
        reader=f"{method}_result",
        result=result,
        error=error,
        errors=list(c.errors),
        options=_options(ctx, merged),
        effective_options=_effective(merged),
    )


def _claim(
    taken: dict[str, tuple[Mark, str]], problems: Problems, name: str, mark: Mark, owner: str
) -> bool:
    """Record that `owner` defines `name`; report and return False when it is taken."""
    first = taken.get(name)
    if first is None:
        taken[name] = (mark, owner)
        return True
    at = f" (at {first[0].short()})" if first[0] != mark else ""
    problems.add(mark, f"{owner[:1].upper()}{owner[1:]} becomes `{name}`, as does {first[1]}{at}")
    return False


def check_names(schemas: Sequence[Schema], problems: Problems) -> None:
    """Report generated names that collide or are not valid Python."""
    for s in schemas:
        taken: dict[str, tuple[Mark, str]] = {}
        prefix = camel_case(s.domain) if s.domain else ""
        if prefix:
            taken[f"{prefix}Handlers"] = (s.mark, f"the handler stub of domain `{s.domain}`")
            taken[f"{prefix}AsyncHandlers"] = (s.mark, f"the handler stub of domain `{s.domain}`")
        taken["DOMAIN"] = (s.mark, "the domain constant of the generated module")
        for t in s.types:
            _claim(taken, problems, t.name, t.mark, f"type `{t.name}`")
        for c in s.commands:
            method = snake_case(c.name)
            if keyword.iskeyword(method):
                problems.add(
                    c.mark, f"Command `{c.name}` becomes the method `{method}`, a Python keyword"
                )
                continue
            owner = f"command `{c.name}`"
            names = [c.name, method, f"send_{method}", f"send_{method}_async"]
            names += [f"{c.name}Result"] if c.result is not None else []
            names += [f"{c.name}Error"] if c.errors else []
            for name in names:
                if not _claim(taken, problems, name, c.mark, owner):
                    break
            for code in c.errors:
                low = code.lower()
                if keyword.iskeyword(low) or low in ERROR_RESERVED:
                    problems.add(
                        c.mark,
                        f"Error code `{code}` of `{c.name}` is reserved: its method `{low}` "
                        "would hide a Python keyword or an exception attribute",
                    )


def build(schemas: Sequence[Schema], package: str, models: str) -> Package:
    """The package model of checked schemas, free of name collisions."""
    modules = [_module(s, package, models) for s in schemas]
    modules.sort(key=lambda m: m.domain)
    sources = ", ".join(m.source for m in modules)
    domains = ", ".join(f"`{m.domain}`" for m in modules)
    return Package(
        name=package,
        models=models,
        modules=modules,
        header=f"# Generated by cbgen {__version__} from {sources}. DO NOT EDIT.",
        doc=f"Commands of the domains {domains}, generated by cbgen from their schemas.",
    )
