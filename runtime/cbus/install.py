"""Make a database ready for cbus: PGMQ, then cbus's own schema, then domain queues.

Everything here is idempotent and safe from several processes at once: the work is
serialised by a transaction-level advisory lock, and PGMQ's own script, which is
not idempotent, runs only when `pgmq.send` does not exist yet.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from ._command_types import schema_rows
from ._ordering import domain_indexes
from ._queries import raw
from ._retention import retention_rows
from .errors import InstallError
from .pgmq import check_queue_name
from .registry import DomainSpec

__all__ = [
    "MIN_PGMQ_VERSION",
    "SCHEMA_VERSION",
    "install",
    "install_async",
    "install_domain",
    "install_domain_async",
]

MIN_PGMQ_VERSION = (1, 5)
# The version of cbus's own schema this runtime's queries need (sql/schema.sql
# records each version it installs). 2: cbus.as_uuid and cbus.as_int for the lease.
# 4: the troubleshooting index keeps a kind's first 200 characters.
# 5: cbus.command_type, each command's JSON schemas.
# 6: cbus.rate_bucket and cbus.schedule (rate limits, schedules); cbus.retention and
#    the index the pruner walks (command_created).
SCHEMA_VERSION = 6
_LOCK_KEY = 0x63627573  # "cbus"

_CHECK_EXTENSION = raw("pgmq_probe")


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _pgmq_sql() -> tuple[str, str]:
    """The SQL-only PGMQ install script shipped by the `pgmq` package, and its version."""
    base = files("pgmq").joinpath("sql")
    if not base.joinpath("VERSION").is_file() or not base.joinpath("pgmq.sql").is_file():
        raise InstallError(
            "This server has no PGMQ extension, and the installed `pgmq` package carries no "
            "PGMQ SQL (pgmq/sql/pgmq.sql and VERSION ship from pgmq 1.1.3 on): run "
            "`pip install 'pgmq>=1.1.3'`, or install the PGMQ extension on the server"
        )
    version = base.joinpath("VERSION").read_text("utf-8")
    version = next(
        line.strip() for line in version.splitlines() if line.strip() and not line.startswith("#")
    )
    return base.joinpath("pgmq.sql").read_text("utf-8"), version


def _schema_sql() -> str:
    return files(__package__).joinpath("sql", "schema.sql").read_text("utf-8")


def _plan(row: tuple[Any, ...]) -> str | None:
    """What to run for PGMQ, given the server's state; raises when it is too old."""
    installed_ext, available_ext, has_send, has_headers, has_format_table_name = row
    if installed_ext is not None:
        if _parse_version(installed_ext) < MIN_PGMQ_VERSION:
            raise InstallError(
                f"PGMQ {installed_ext} is installed, but cbus needs PGMQ "
                f"{'.'.join(map(str, MIN_PGMQ_VERSION))} or newer (message headers): "
                "run ALTER EXTENSION pgmq UPDATE"
            )
        return None
    if has_send:
        if not has_headers:
            # Installed as plain SQL, which records no version: the objects tell.
            found = "PGMQ 1.4" if has_format_table_name else "a PGMQ older than 1.4"
            raise InstallError(
                f"The pgmq schema on this server is {found}, installed as plain SQL "
                "(pgmq.send takes no headers); cbus needs PGMQ "
                f"{'.'.join(map(str, MIN_PGMQ_VERSION))} or newer: upgrade it, or drop the "
                "pgmq schema and run `cbus db install` again"
            )
        return None
    if available_ext is not None and _parse_version(available_ext) >= MIN_PGMQ_VERSION:
        return raw("create_pgmq_extension")
    return "sql"


def install(conn: psycopg.Connection[Any]) -> None:
    """Install PGMQ (extension if the server has it, else the bundled SQL) and cbus's schema.

    Commits its own transaction; run it on a connection with no transaction open.
    """
    with conn.transaction():
        conn.execute(raw("install_lock"), (_LOCK_KEY,))
        row = conn.cursor(row_factory=tuple_row).execute(_CHECK_EXTENSION).fetchone()
        assert row is not None
        plan = _plan(row)
        if plan == "sql":
            script, _ = _pgmq_sql()
            conn.execute(script.encode())
        elif plan is not None:
            conn.execute(plan.encode())
        conn.execute(_schema_sql().encode())


async def install_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """The async twin of `install`."""
    async with conn.transaction():
        await conn.execute(raw("install_lock"), (_LOCK_KEY,))
        cur = await conn.cursor(row_factory=tuple_row).execute(_CHECK_EXTENSION)
        row = await cur.fetchone()
        assert row is not None
        plan = _plan(row)
        if plan == "sql":
            script, _ = _pgmq_sql()
            await conn.execute(script.encode())
        elif plan is not None:
            await conn.execute(plan.encode())
        await conn.execute(_schema_sql().encode())


def _domain_statements(domain: DomainSpec) -> list[tuple[sql.Composed | str, Any]]:
    queue = check_queue_name(domain.queue)
    return [
        (sql.SQL(raw("install_lock_literal")).format(key=sql.Literal(_LOCK_KEY)), None),
        (sql.SQL(raw("create_queue")).format(queue=sql.Literal(queue)), None),
        *domain_indexes(domain),  # ordering keys and priorities only (ADR 0011)
        *((raw("record_command_type"), row) for row in schema_rows(domain)),
        *((raw("record_retention"), row) for row in retention_rows(domain)),
    ]


def _no_cbus(domain: DomainSpec) -> InstallError:
    return InstallError(
        f"Cannot install domain `{domain.name}`: cbus is not installed in this database "
        "(or its schema predates version 6): run cbus.install(conn) first"
    )


def install_domain(conn: psycopg.Connection[Any], domain: DomainSpec) -> None:
    """Create the domain's queue and record its commands' schemas (idempotent)."""
    try:
        with conn.transaction():
            for stmt, params in _domain_statements(domain):
                conn.execute(stmt, params)
    except psycopg.errors.UndefinedTable as exc:
        raise _no_cbus(domain) from exc


async def install_domain_async(conn: psycopg.AsyncConnection[Any], domain: DomainSpec) -> None:
    """The async twin of `install_domain`."""
    try:
        async with conn.transaction():
            for stmt, params in _domain_statements(domain):
                await conn.execute(stmt, params)
    except psycopg.errors.UndefinedTable as exc:
        raise _no_cbus(domain) from exc


def schema_problem(installed: int | None) -> str | None:
    """What is wrong with the cbus schema a worker found (None: nothing)."""
    if installed is None:
        return (
            "cbus is not installed in this database: run `cbus db install --domains ...` "
            "(or cbus.install(conn)) first"
        )
    if installed < SCHEMA_VERSION:
        return (
            f"The cbus schema in this database is version {installed}; this cbus needs "
            f"version {SCHEMA_VERSION}: run `cbus db install` (or cbus.install(conn)) again"
        )
    return None
