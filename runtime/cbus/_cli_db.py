"""What every `cbus` command does with its DSN: check it, connect, report failures.

A user's mistake becomes one line on stderr that says what to do, with a non-zero
exit status, never a traceback (contract section 6). Nothing here echoes a DSN or
libpq's parse error, which may quote a password.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg
from click.core import ParameterSource
from psycopg.conninfo import conninfo_to_dict

__all__ = [
    "UserError",
    "check_dsn",
    "connect",
    "db_errors",
    "dsn_callback",
    "one_line",
    "wait_for_server",
]

NOT_INSTALLED = "cbus is not installed in this database: run `cbus db install --domains PKG` first"
_SQLALCHEMY = re.compile(r"^(postgres(?:ql)?)\+(\w+)://", re.IGNORECASE)
_BAD_OPTION = re.compile(r'invalid connection option "(\w+)"')


class UserError(click.ClickException):
    """A user's mistake: one line (no usage text), exit status 2."""

    exit_code = 2


def one_line(text: str) -> str:
    """libpq's messages span lines (a hint on the second); a report takes one."""
    return " ".join(text.split())


def check_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's parameters; raises `UserError` for one libpq cannot parse."""
    found = _SQLALCHEMY.match(dsn)
    if found:
        raise UserError(
            f"The DSN is a SQLAlchemy URL ({found[1]}+{found[2]}://...): drop `+{found[2]}`, "
            f"as in {found[1]}://USER@HOST/DBNAME"
        )
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        option = _BAD_OPTION.search(str(exc))
        if option:
            raise UserError(
                f"Malformed DSN: unknown connection option `{option[1]}` "
                "(see libpq's parameter keywords)"
            ) from None
        # libpq's message quotes the text it stopped at, which may be a password.
        raise UserError(
            "Malformed DSN: use postgresql://USER@HOST:PORT/DBNAME or key=value pairs, "
            "quoting a value with spaces as key='a b'"
        ) from None


def dsn_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check `--dsn`/`CBUS_DSN`, and warn when the command line carries a password."""
    if value is None:
        return value
    params = check_dsn(value)
    if params.get("password") and ctx.get_parameter_source(param.name or "dsn") in (
        ParameterSource.COMMANDLINE,
        None,
    ):
        click.echo(
            "Warning: --dsn carries a password, which `ps` shows to every user: "
            "use CBUS_DSN, a PGPASSFILE or a libpq service file instead",
            err=True,
        )
    return value


@contextmanager
def db_errors() -> Iterator[None]:
    """PostgreSQL's errors as one line that says what to do."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"Cannot reach PostgreSQL: {one_line(str(exc))}") from exc
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        text = exc.diag.message_primary or str(exc)
        if re.search(r'\b"?(cbus|pgmq)"?\.|schema "(cbus|pgmq)"', text):
            raise click.ClickException(f"{NOT_INSTALLED} ({one_line(text)})") from exc
        raise click.ClickException(f"PostgreSQL: {one_line(text)}") from exc
    except psycopg.ProgrammingError as exc:
        if isinstance(exc, psycopg.errors.UndefinedFunction):
            text = exc.diag.message_primary or str(exc)
            if "cbus." in text or "pgmq." in text:
                raise click.ClickException(f"{NOT_INSTALLED} ({one_line(text)})") from exc
        if exc.sqlstate is None:  # raised by psycopg before reaching the server
            raise UserError("Malformed DSN: libpq cannot parse it") from None
        raise click.ClickException(f"PostgreSQL: {one_line(str(exc))}") from exc
    except psycopg.Error as exc:
        raise click.ClickException(f"PostgreSQL: {one_line(str(exc))}") from exc


@contextmanager
def connect(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection whose failures are reported as `db_errors` says."""
    with db_errors(), psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


START_GRACE = 5.0  # seconds `cbus worker` waits at start for a server that refuses


def wait_for_server(dsn: str, grace: float = START_GRACE, every: float = 0.25) -> None:
    """Connect once before a worker starts; fail in one line if the server stays away.

    A server that cannot be reached is retried every `every` seconds for `grace`
    seconds (a restart takes about one), then reported as `db_errors` does; one that
    answers the DSN can never work (unknown role or database, refused password) is
    reported at once.
    """
    from ._worker_dsn import unusable_database

    deadline = time.monotonic() + grace
    with db_errors():
        while True:
            try:
                psycopg.connect(dsn, autocommit=True).close()
                return
            except psycopg.OperationalError as exc:
                if unusable_database(exc) is not None or time.monotonic() >= deadline:
                    raise
            time.sleep(every)
