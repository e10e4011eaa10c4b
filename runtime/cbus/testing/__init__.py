"""Test helpers for code that uses cbus: `sent`, `run_pending`, and a pytest plugin.

The plugin (`cbus.pytest_plugin`, registered by the `pytest11` entry point) gives
each test that asks for it a fresh database with cbus and the project's domains
(`cbus_db`, a psycopg connection; `cbus_dsn`, its DSN). With it, a test of "my
endpoint sends CreateOrder and the handler writes the row" reads:

    def test_create_order(cbus_db):
        place_order(cbus_db, customer="c-1")            # your code: sends CreateOrder
        cbus_db.commit()
        [cmd] = sent(cbus_db, orders.CreateOrder)
        [outcome] = run_pending(cbus_db, [MyOrders()])
        assert outcome.status == "COMPLETED"

Nothing here is imported by the worker or the senders.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from .._queries import query
from ..codec import decode, decode_headers
from ..names import command_queue
from ..pgmq import register_adapters
from ..registry import CommandSpec, all_domains, domain_of, spec_for_kind

__all__ = ["Outcome", "OutcomeError", "Sent", "run_pending", "sent"]

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Sent(Generic[C]):
    """A command on its queue: the decoded command and its headers."""

    command: C
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    msg_id: int
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class OutcomeError:
    """The last error of a command: its exception type, code, message and details."""

    type: str | None
    code: str | None
    message: str | None
    details: Any = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a command stands after `run_pending`.

    `status` is the command log's (`COMPLETED`, `FAILED`, `IN_TROUBLESHOOTING_QUEUE`,
    or `PENDING` for a delayed one); `result` the handler's result, decoded into the
    command's result class when it declares one; `error` its last error, or None.
    """

    domain: str
    command_id: uuid.UUID
    kind: str
    status: str
    attempts: int
    result: Any
    error: OutcomeError | None


def _spec_of_class(command_class: type[Any]) -> CommandSpec:
    for domain in all_domains():
        for spec in domain.commands:
            if spec.type is command_class:
                return spec
    raise TypeError(
        f"{getattr(command_class, '__qualname__', command_class)!r} is not a generated cbus "
        "command class (import the generated module that defines it)"
    )


def sent(conn: psycopg.Connection[Any], command_class: type[C]) -> list[Sent[C]]:
    """The commands of `command_class` on their queue as `conn` sees them, oldest first.

    Those `conn` sent in its open transaction count too; commands a worker has
    already acknowledged do not (they left the queue).
    """
    spec = _spec_of_class(command_class)
    with conn.cursor() as cur:
        register_adapters(cur)
        cur.execute(query("testing_sent", spec.queue), {"kind": spec.kind})
        rows = cur.fetchall()
    found: list[Sent[C]] = []
    for msg_id, message, headers in rows:
        head = decode_headers(headers)
        found.append(
            Sent(
                command=decode(message, command_class),
                command_id=head.command_id,
                correlation_id=head.correlation_id,
                msg_id=msg_id,
                reply_to=head.reply_to,
            )
        )
    return found


def _dsn_of(conn_or_dsn: psycopg.Connection[Any] | str) -> str:
    if isinstance(conn_or_dsn, str):
        return conn_or_dsn
    if isinstance(conn_or_dsn, psycopg.Connection):
        dsn = conn_or_dsn.info.dsn
        password = conn_or_dsn.pgconn.password
        return make_conninfo(dsn, password=password.decode()) if password else dsn
    raise TypeError(
        f"run_pending takes a psycopg.Connection or a DSN string, not "
        f"{type(conn_or_dsn).__qualname__}"
    )


def run_pending(
    conn_or_dsn: psycopg.Connection[Any] | str, handlers: Sequence[object]
) -> list[Outcome]:
    """Run the committed commands queued for these handlers' domains; one outcome each.

    A `cbus.Worker` runs them with `run(until_idle=True)` (one consumer), so
    handlers run exactly as in production: `ctx.conn`, retries with the schema's
    backoff (a handler that keeps failing takes its whole backoff), business errors,
    the troubleshooting queue. Commands the handlers send to these domains run too,
    and are in the list. Uncommitted sends of `conn` are not run: commit first.
    """
    from ..store import get_command
    from ..worker import Worker

    dsn = _dsn_of(conn_or_dsn)
    worker = Worker(dsn, list(handlers), concurrency=1)  # type: ignore[arg-type]
    domains = [domain_of(h).name for h in handlers]
    with psycopg.connect(dsn, autocommit=True) as conn:
        since: dt.datetime = conn.execute(query("testing_now")).fetchone()[0]  # type: ignore[index]
        queued = [
            (domain, uuid.UUID(row[0]))
            for domain in domains
            for row in conn.execute(query("testing_queued_ids", command_queue(domain)))
            if row[0]
        ]
        worker.run(until_idle=True)
        touched = [
            (row[0], row[1])
            for row in conn.execute(query("testing_touched"), {"domains": domains, "since": since})
        ]
        outcomes: list[Outcome] = []
        for domain, command_id in dict.fromkeys([*queued, *touched]):
            record = get_command(conn, domain, command_id)
            if record is not None:
                outcomes.append(_outcome(record))
    return outcomes


def _outcome(record: Any) -> Outcome:
    spec = spec_for_kind(record.kind)
    result = record.result
    if result is not None and spec is not None and spec.result_type is not None:
        result = record.result_as(spec.result_type)
    error = None
    if record.last_error_type or record.last_error_code or record.last_error_message:
        error = OutcomeError(
            type=record.last_error_type,
            code=record.last_error_code,
            message=record.last_error_message,
            details=record.last_error_details,
        )
    return Outcome(
        domain=record.domain,
        command_id=record.command_id,
        kind=record.kind,
        status=str(record.status),
        attempts=record.attempts,
        result=result,
        error=error,
    )
