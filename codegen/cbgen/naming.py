"""Naming: how schema names become Python names, and the check that they do not collide.

`snake_case`, `camel_case` and `functions_of` give every generated name (the rule is
in docs/schemas.md); `check_names` reports collisions as schema errors.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence

from .defs import Schema
from .load import Mark
from .problems import Problems

__all__ = [
    "ERROR_RESERVED",
    "STUB_MODULES",
    "camel_case",
    "check_names",
    "claim",
    "domain_alias",
    "functions_of",
    "hook_name",
    "snake_case",
]


def hook_name(method: str, version: int) -> str:
    """The handler stub's method that upgrades `version` of a command to the next."""
    return f"upgrade_{method}_v{version}"


# Attributes of BusinessError and Exception that an error-code classmethod must not hide,
# and the module its class body's annotations name (mypy looks there first).
ERROR_RESERVED = ("code", "message", "details", "args", "with_traceback", "add_note", "typing")
# The private alias of `cbus.api.DEFAULT`, typed `typing.Any` so it can be the

# Modules the handler stubs' class bodies name in annotations.
STUB_MODULES = ("cbus", "typing")

_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`CreateOrder` -> `create_order`, `HTTPPing` -> `http_ping`."""
    return _SNAKE.sub("_", name).lower()


def domain_alias(domain: str) -> str:
    """The private name a module imports another domain under.

    A domain may be named like a module the generated code imports (`uuid`,
    `typing`) or a function it defines (`install`), and a field or a handler method
    may be named like a domain; `_d_uuid` is none of those: fields and methods never
    start with `_`, and builders are `_build_*`.
    """
    return f"_d_{domain}"


def camel_case(domain: str) -> str:
    """`order_items` -> `OrderItems`."""
    return "".join(part[:1].upper() + part[1:] for part in domain.split("_"))


def functions_of(method: str) -> dict[str, str]:
    """The module-level functions of one command, by role; `check_names` claims them."""
    return {
        "sender": f"send_{method}",
        "sender_async": f"send_{method}_async",
        "reader": f"{method}_result",
        "waiter": f"wait_{method}",
        "waiter_async": f"wait_{method}_async",
        "builder": f"_build_{method}",
    }


def claim(
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
    """Report generated names that collide or are not valid Python.

    Two namespaces: the module's (classes, functions, `DOMAIN`) and the handler
    stubs' (one method per command). `WaitFoo` and `FooResult` would both define
    `wait_foo_result` in the module, one as a reader, one as a waiter.
    """
    for s in schemas:
        taken: dict[str, tuple[Mark, str]] = {}
        prefix = camel_case(s.domain) if s.domain else ""
        if prefix:
            taken[f"{prefix}Handlers"] = (s.mark, f"the handler stub of domain `{s.domain}`")
            taken[f"{prefix}AsyncHandlers"] = (s.mark, f"the handler stub of domain `{s.domain}`")
        taken["DOMAIN"] = (s.mark, "the domain constant of the generated module")
        for name in ("install", "install_async"):
            taken[name] = (s.mark, f"the function `{name}` of the generated module")
        methods: dict[str, tuple[Mark, str]] = {}
        for t in s.types:
            claim(taken, problems, t.name, t.mark, f"type `{t.name}`")
        for c in s.commands:
            method = snake_case(c.name)
            if keyword.iskeyword(method):
                problems.add(
                    c.mark, f"Command `{c.name}` becomes the method `{method}`, a Python keyword"
                )
                continue
            if method in STUB_MODULES:
                # mypy resolves the stubs' annotations (`ctx: cbus.Context`) in the class
                # body first, where the method would stand for the module.
                problems.add(
                    c.mark,
                    f"Command `{c.name}` becomes the method `{method}`, which would hide "
                    f"the module `{method}` in the handler stubs",
                )
                continue
            owner = f"command `{c.name}`"
            if not claim(methods, problems, method, c.mark, owner):
                continue
            names = [c.name, *functions_of(method).values()]
            names += [f"{c.name}Result"] if c.result is not None else []
            names += [f"{c.name}Error"] if c.errors else []
            for name in names:
                if not claim(taken, problems, name, c.mark, owner):
                    break
            for prev in c.previous:
                where = f"version {prev.version} of command `{c.name}`"
                claim(taken, problems, f"{c.name}V{prev.version}", prev.mark, where)
                hook = hook_name(method, prev.version)
                claim(methods, problems, hook, prev.mark, where)
            for code in c.errors:
                low = code.lower()
                if keyword.iskeyword(low) or low in ERROR_RESERVED:
                    problems.add(
                        c.mark,
                        f"Error code `{code}` of `{c.name}` is reserved: its method `{low}` "
                        "would hide a Python keyword, an exception attribute or a module",
                    )
