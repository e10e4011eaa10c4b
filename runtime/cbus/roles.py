"""Least-privilege roles: a producer, a worker and an operator, each held to its domains.

`grant(conn, kind, role, domains)` creates the role if it is missing (NOLOGIN unless
asked) and grants it what its kind needs and nothing else:

- table privileges: PGMQ's queue and archive tables are per domain already, so a
  role granted on one domain's tables cannot touch another's;
- cbus's own tables (command log, audit, troubleshooting) hold every domain, so
  row-level security keyed on their `domain` column holds a role to the domains
  recorded for it in `cbus.domain_grant` (`sql/roles.sql`, ADR 0007).

Everything is idempotent; the statements come back as text, for the caller to show.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from importlib.resources import files
from typing import Any, Literal

import psycopg
from psycopg import sql

from ._queries import raw
from .install import _LOCK_KEY
from .pgmq import archive_table, check_queue_name, queue_table
from .registry import DomainSpec

__all__ = ["KINDS", "Kind", "domains_of", "grant", "lacking_message"]

Kind = Literal["producer", "worker", "operator"]
KINDS: tuple[Kind, ...] = ("producer", "worker", "operator")
# What row-level security lets each kind do in its domains (cbus.domain_grant.access).
_ACCESS: dict[Kind, str] = {"producer": "send", "worker": "consume", "operator": "operate"}

# The privileges of each kind on cbus's shared tables (row-level security scopes the
# first three by domain); the keywords are fixed here, never taken from input.
_SHARED: dict[Kind, list[tuple[str, tuple[str, str]]]] = {
    "producer": [
        ("INSERT, SELECT", ("cbus", "command")),
        ("INSERT, SELECT", ("cbus", "batch")),
        ("SELECT", ("cbus", "domain_grant")),
    ],
    "worker": [
        ("SELECT, INSERT, UPDATE", ("cbus", "command")),
        ("SELECT, INSERT", ("cbus", "audit")),
        ("SELECT, UPDATE", ("cbus", "batch")),
        ("SELECT", ("cbus", "schema_version")),
        ("SELECT", ("cbus", "domain_grant")),
        ("SELECT", ("pgmq", "meta")),
        ("SELECT, INSERT, UPDATE", ("cbus", "rate_bucket")),  # rate limits
        ("SELECT, INSERT, UPDATE", ("cbus", "schedule")),  # schedules
    ],
    "operator": [
        ("SELECT, UPDATE", ("cbus", "command")),
        ("SELECT, INSERT", ("cbus", "audit")),
        ("SELECT", ("cbus", "troubleshooting")),
        ("SELECT, UPDATE", ("cbus", "batch")),
        ("SELECT", ("cbus", "schema_version")),
        ("SELECT", ("cbus", "domain_grant")),
        ("SELECT", ("pgmq", "meta")),
        ("SELECT", ("cbus", "schedule")),  # cbus stats: the schedules
    ],
}
# Per domain: (privileges on its queue table, on its archive table, inserts messages).
_PER_DOMAIN: dict[Kind, tuple[str, str | None, bool]] = {
    # INSERT ... RETURNING reads msg_id, and get_command the lease (vt, read_ct) that
    # shows a command IN_PROGRESS; never a body nor the headers.
    "producer": ("INSERT, SELECT (msg_id, vt, read_ct)", None, True),
    "worker": ("SELECT, UPDATE, DELETE", "SELECT, INSERT", False),
    # `tsq retry` sends the archived message again (pgmq.send); `tsq show` reads both.
    "operator": ("SELECT, INSERT", "SELECT", True),
}
# On a reply queue: a producer reads its replies; workers and operators send them.
_REPLY: dict[Kind, tuple[str, bool]] = {
    "producer": ("SELECT, UPDATE, DELETE", False),
    "worker": ("INSERT, SELECT (msg_id)", True),
    "operator": ("INSERT, SELECT (msg_id)", True),
}


def domains_of(spec: str) -> list[DomainSpec]:
    """The domains of generated packages or domain modules (`shop`, `shop.orders`, ...)."""
    found: list[DomainSpec] = []
    for name in (part.strip() for part in spec.split(",")):
        try:
            package = importlib.import_module(name)
            subs = getattr(package, "__all__", []) if hasattr(package, "__path__") else []
            modules = [package] + [importlib.import_module(f"{name}.{sub}") for sub in subs]
        except ImportError as exc:
            raise ImportError(f"cannot import `{name}`: {exc}") from exc
        found += [m.DOMAIN for m in modules if isinstance(getattr(m, "DOMAIN", None), DomainSpec)]
    if not found:
        raise ValueError(f"`{spec}` declares no cbus domain")
    return found


def _roles_sql() -> bytes:
    return files(__package__).joinpath("sql", "roles.sql").read_bytes()


def check_role_name(name: str) -> str:
    """Refuse a role name PostgreSQL would truncate or reserves."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name.encode()) > 63
        or name.startswith("pg_")
        or "\0" in name
    ):
        raise ValueError(
            f"Invalid role name {name!r}: expected 1 to 63 bytes, not starting with `pg_`"
        )
    return name


def _table_grant(privileges: str, table: sql.Identifier, role: sql.Identifier) -> sql.Composed:
    return sql.SQL(raw("grant_table")).format(
        privileges=sql.SQL(privileges), table=table, role=role
    )


def _sequence_grant(
    conn: psycopg.Connection[Any], table: sql.Identifier, role: sql.Identifier
) -> sql.Composed:
    row = conn.execute(raw("queue_sequence"), {"table": table.as_string(conn)}).fetchone()
    assert row is not None and row[0] is not None, table
    schema, _, name = str(row[0]).partition(".")
    return sql.SQL(raw("grant_sequence")).format(
        sequence=sql.Identifier(schema.strip('"'), name.strip('"')), role=role
    )


def grant(
    conn: psycopg.Connection[Any],
    kind: Kind,
    role: str,
    domains: Sequence[DomainSpec],
    *,
    login: bool = False,
    reply_queues: Iterable[str] = (),
    dry_run: bool = False,
) -> list[str]:
    """Create or grant `role` as a `kind` of the given domains; the statements it ran.

    Runs in one transaction (rolled back with `dry_run`), under the install lock.
    The connection's role must own cbus's tables and the domains' queues, and have
    CREATEROLE to create a role; no superuser is needed.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown role kind {kind!r}: expected one of {', '.join(KINDS)}")
    ident = sql.Identifier(check_role_name(role))
    replies = [check_queue_name(q) for q in reply_queues]
    done: list[str] = []

    def run(stmt: sql.Composed) -> None:
        conn.execute(stmt)
        done.append(stmt.as_string(conn))

    with conn.transaction(force_rollback=dry_run):
        conn.execute(raw("install_lock"), (_LOCK_KEY,))
        conn.execute(_roles_sql())
        row = conn.execute(raw("role_exists"), {"role": role}).fetchone()
        if row is None or not row[0]:
            run(
                sql.SQL(raw("create_role")).format(
                    role=ident, login=sql.SQL("LOGIN" if login else "NOLOGIN")
                )
            )
        run(sql.SQL(raw("grant_schemas")).format(role=ident))
        run(sql.SQL(raw("grant_functions")).format(role=ident))
        for privileges, (schema, table) in _SHARED[kind]:
            run(_table_grant(privileges, sql.Identifier(schema, table), ident))
        on_queue, on_archive, inserts = _PER_DOMAIN[kind]
        for domain in domains:
            run(_table_grant(on_queue, queue_table(domain.queue), ident))
            if on_archive is not None:
                run(_table_grant(on_archive, archive_table(domain.queue), ident))
            if inserts:
                run(_sequence_grant(conn, queue_table(domain.queue), ident))
        on_reply, reply_inserts = _REPLY[kind]
        for queue in replies:
            run(_table_grant(on_reply, queue_table(queue), ident))
            if reply_inserts:
                run(_sequence_grant(conn, queue_table(queue), ident))
        for domain in domains:
            params = {"role": role, "domain": domain.name, "access": _ACCESS[kind]}
            conn.execute(raw("record_domain_grant"), params)
            done.append(f"-- {role} may {_ACCESS[kind]} in domain {domain.name}")
    return done


def lacking_message(role: str, lacking: Sequence[str], packages: str) -> str:
    """The one line a worker that lacks grants stops with."""
    return (
        f"Role {role} lacks {', '.join(lacking)}: grant them with "
        f"`cbus db roles --domains {packages} --worker {role}`"
    )
