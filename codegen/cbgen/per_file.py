"""The checks of one schema file on its own: keys, names, options, fields and types.

Every problem is reported (never only the first); what cannot be read is left out
of the `Schema`, so the checks across files see only definitions that parsed.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections.abc import Sequence
from typing import Any

from .defs import (
    CODE_RE,
    COMMAND_KEYS,
    CONSTRAINTS,
    DOMAIN_RE,
    ENUM_RE,
    FIELD_KEYS,
    FIELD_RE,
    FORMAT_VERSION,
    GENERATED_NAMES,
    KEY_OPTIONS,
    NAME_RE,
    OPTION_KEYS,
    RATE_UNITS,
    RESULT_KEYS,
    SENDER_PARAMS,
    TOP_KEYS,
    TYPE_KEYS,
    CommandDef,
    FieldDef,
    KeyOption,
    RateLimitDef,
    ResultDef,
    Schema,
    TypeDef,
    TypeRef,
)
from .evolution import check_evolution
from .load import Map, Mark, Node, Scalar, Seq
from .problems import Problems, hint, joined, kind_of
from .retention import read_retention
from .schedules import read_schedules
from .typeexpr import TypeSyntaxError, parse, set_marks

__all__ = ["FileChecker", "check_file"]

RATE_RE = re.compile(r"^([1-9][0-9]{0,17})/([smh])$")


class FileChecker:
    def __init__(self, problems: Problems, file: str) -> None:
        self.p = problems
        self.file = file

    def err(self, mark: Mark, message: str) -> None:
        self.p.add(mark, message)

    def keys(self, node: Map, allowed: Sequence[str]) -> None:
        for k, _ in node.items:
            if k.text not in allowed:
                h = hint(k.text, allowed)
                more = h or f" (expected one of {joined(allowed)})"
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

    def rate_limit(self, node: Node) -> RateLimitDef | None:
        """`"100/s"`, `"5/m"` or `"1/h"`: a positive integer count per second, minute, hour."""
        text = node.text if isinstance(node, Scalar) and isinstance(node.value, str) else None
        found = RATE_RE.match(text) if text is not None else None
        if found is None:
            shown = f"`{text}`" if text is not None else f"`{kind_of(node)}`"
            self.err(
                node.mark,
                "Expected a rate such as `100/s`, `5/m` or `1/h` (a positive integer "
                f"count) for `rate_limit`, got {shown}",
            )
            return None
        assert text is not None
        count, unit = found.groups()
        return RateLimitDef(int(count), RATE_UNITS[unit], text, node.mark)

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
        g = m.get("unknown_version_grace")
        if g is not None:
            grace = self.seconds(g, "unknown_version_grace")
            if grace is not None:
                out["unknown_version_grace"] = grace
        p = m.get("priority")
        if p is not None:
            i = self.integer(p, "priority", 0)
            if i is not None and i > 9:
                self.err(p.mark, f"Expected `int` from 0 to 9 for `priority`, got `{i}`")
            elif i is not None:
                out["priority"] = i
        for key in KEY_OPTIONS:
            k = m.get(key)
            if k is not None:
                name = self.text(k, f"`{key}` (a field name)")
                if name is not None:
                    out[key] = KeyOption(name, k.mark)
        r = m.get("rate_limit")
        if r is not None:
            rate = self.rate_limit(r)
            if rate is not None:
                out["rate_limit"] = rate
        ret = m.get("retention")
        if ret is not None:
            kept = read_retention(self, ret)
            if kept is not None:
                out["retention"] = kept
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
            ref, rest = parse(text, 0)
        except TypeSyntaxError as exc:
            self.err(node.mark, f"Invalid type `{text}`: {exc}")
            return None
        if rest != len(text):
            self.err(node.mark, f"Invalid type `{text}`: unexpected `{text[rest:]}`")
            return None
        set_marks(ref, node.mark)
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
        elif command and name == "cbus_priority":
            self.err(
                key.mark,
                "Field name `cbus_priority` is reserved: it is the sender's priority "
                "argument when a command has a field named `priority`",
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
            rnode = value.get("renamed_from")
            if rnode is not None:
                f.renamed_from = self.text(rnode, "`renamed_from`") or ""
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


def check_file(root: Node, file: str, source: str, p: Problems) -> Schema | None:
    c = FileChecker(p, file)
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
                if cmd is not None and isinstance(value, Map):
                    check_evolution(c, value, cmd, domain)
                if cmd is not None:
                    schema.commands.append(cmd)
    schema.schedules = read_schedules(c, top.get("schedules"))
    return schema


def _class_name(c: FileChecker, key: Scalar, what: str) -> bool:
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


def _check_type(c: FileChecker, key: Scalar, value: Node, domain: str) -> TypeDef | None:
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


def _check_command(c: FileChecker, key: Scalar, value: Node) -> CommandDef | None:
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
