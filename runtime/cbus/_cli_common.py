"""What the `cbus` subcommands share: the --dsn and --domains options, the operator
errors and their exit statuses, and the table and value formatting of their output."""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
import psycopg

from ._cli_db import UserError, connect, dsn_callback

if TYPE_CHECKING:
    from .registry import DomainSpec

__all__ = [
    "DSN_HELP",
    "EXIT_CONFLICT",
    "EXIT_HELP",
    "EXIT_NOT_FOUND",
    "add_cwd_to_path",
    "clip",
    "connect_operator",
    "domains_option",
    "dsn_option",
    "echo_audit",
    "error_of",
    "import_domains",
    "import_generated",
    "table",
    "to_json",
    "when",
]

DSN_HELP = "PostgreSQL connection string (default: $CBUS_DSN, which `ps` does not show)"

EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4

EXIT_HELP = (
    "Exit status: 0 done, 1 other error, 2 bad usage, 3 command not found, "
    "4 command not in the troubleshooting queue (for example another operator acted first)."
)


def dsn_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dsn", envvar="CBUS_DSN", required=True, help=DSN_HELP, callback=dsn_callback
    )(f)


def add_cwd_to_path() -> None:
    """Import user modules from where the command runs, as `python -m` would."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_generated(name: str) -> list[DomainSpec]:
    """The domains of a generated package, or the one of a domain module (`shop.orders`)."""
    from .registry import DomainSpec

    add_cwd_to_path()
    try:
        package = importlib.import_module(name)
        own = getattr(package, "DOMAIN", None)
        if isinstance(own, DomainSpec):
            return [own]
        names = getattr(package, "__all__", []) if hasattr(package, "__path__") else []
        found = [f"{name}.{sub}" for sub in names]
        subs = [importlib.import_module(n) for n in found if importlib.util.find_spec(n)]
    except ImportError as exc:
        raise UserError(f"Cannot import `{name}`: {exc}") from exc
    domains = [d for d in (getattr(m, "DOMAIN", None) for m in subs) if isinstance(d, DomainSpec)]
    if not domains:
        raise UserError(
            f"`{name}` is neither a package cbgen generated nor one of its domain modules: "
            "pass the generated package (the `package` of [tool.cbgen], for example `shop`)"
        )
    return domains


def domains_option(checked: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--domains",
        "module",
        default=None,
        help=f"The generated package (for example `shop`): {checked} then checked against "
        "the command's result class.",
    )


def import_domains(module: str | None) -> None:
    """Import the generated package a `--domains` option names, if any."""
    if module:
        try:
            import_generated(module)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import `{module}`: {exc}") from exc


class _NotFound(click.ClickException):
    exit_code = EXIT_NOT_FOUND


class _Conflict(click.ClickException):
    exit_code = EXIT_CONFLICT


@contextmanager
def _operator_errors() -> Iterator[None]:
    """cbus's errors as one line on stderr and an exit status, never a traceback."""
    from .errors import CannotRetry, ConcurrentOperationError, NotFoundError

    try:
        yield
    except NotFoundError as exc:
        raise _NotFound(str(exc)) from exc
    except (ConcurrentOperationError, CannotRetry) as exc:
        raise _Conflict(str(exc)) from exc


@contextmanager
def connect_operator(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; cbus's errors inside become one line and an exit status."""
    with _operator_errors(), connect(dsn) as conn:
        yield conn


def when(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_json(value: Any) -> str:
    from . import codec

    return codec.encode(value).decode()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, two spaces apart; the last column is never padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=False)]
        click.echo("  ".join([*cells, line[-1]]).rstrip())


def clip(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def error_of(type_: str | None, code: str | None, message: str | None) -> str:
    head = " ".join(p for p in (type_, f"[{code}]" if code and code != type_ else None) if p)
    return (f"{head}: {message}" if message else head) or "-"


def echo_audit(events: Sequence[Any]) -> None:
    """An audit trail as a table; `*` marks events read from the command log."""
    table(
        ["AT", "EVENT", "ATTEMPT", "OPERATOR", "DETAIL"],
        [
            [
                when(e.at),
                e.event + ("*" if e.synthetic else ""),
                "-" if e.attempt is None else str(e.attempt),
                e.operator or "-",
                "" if e.detail is None else clip(to_json(e.detail), 100),
            ]
            for e in events
        ],
    )
    if any(e.synthetic for e in events):
        click.echo("* from the command log (the worker's audit level writes no row for it)")
