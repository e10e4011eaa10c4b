"""get_command against a real PostgreSQL: the status an operator sees while a command runs."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import cbus
import psycopg
from cbus._queries import query
from cbus._worker_domain import DomainRuntime, read_query

from .helpers import drain

QUEUE = "testbus__commands"


def _handlers(testbus: ModuleType, seen: list[str], dsn: str) -> Any:
    class Echo(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            with psycopg.connect(dsn, autocommit=True) as other:
                record = cbus.get_command(other, "testbus", ctx.command_id)
            assert record is not None
            seen.append(record.status)
            return testbus.EchoResult(n=cmd.n, text="")

    return Echo()


def test_a_command_whose_handler_runs_reads_in_progress_at_once(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """Before the heartbeat has renewed (and marked) the lease, the log says PENDING."""
    sent = testbus.send_echo(conn, n=1)
    conn.commit()
    seen: list[str] = []
    drain(dsn, [_handlers(testbus, seen, dsn)])
    assert seen == ["IN_PROGRESS"]
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.status == "COMPLETED"


def _status(conn: psycopg.Connection[Any], command_id: Any) -> str:
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None
    return record.status


def _lease(conn: psycopg.Connection[Any], testbus: ModuleType, seconds: int) -> list[Any]:
    """Lease every due message with the worker's own statement, as a worker would."""
    runtime = DomainRuntime.of(_handlers(testbus, [], ""))
    params = {**runtime.read_params(False), "vt": seconds}
    rows = conn.execute(read_query(QUEUE, 10, True), params).fetchall()
    conn.commit()
    return rows


def test_get_command_follows_the_lease_of_the_message(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_echo(conn, n=1)
    later = testbus.send_echo(conn, n=2, delay=60)
    conn.commit()
    assert _status(conn, sent.command_id) == "PENDING"

    [(msg_id, read_ct, *_)] = _lease(conn, testbus, 30)
    assert _status(conn, sent.command_id) == "IN_PROGRESS"
    assert _status(conn, later.command_id) == "PENDING"  # delayed: never read

    # The handler failed: the message waits for its retry, its lease given back.
    conn.execute(
        query("retry_later", QUEUE),
        {
            "domain": "testbus",
            "command_id": sent.command_id,
            "msg_id": msg_id,
            "read_ct": read_ct,
            "backoff": 30,
            "error_type": "RuntimeError",
            "error_code": None,
            "error_message": "boom",
            "previous_span": None,
        },
    )
    conn.commit()
    assert _status(conn, sent.command_id) == "PENDING"

    # Due again and leased by a second delivery; then that worker dies.
    expire = psycopg.sql.SQL("UPDATE {} SET vt = now() - interval '1 s' WHERE msg_id = %s").format(
        psycopg.sql.Identifier("pgmq", "q_" + QUEUE)
    )
    conn.execute(expire, (msg_id,))
    conn.commit()
    assert _status(conn, sent.command_id) == "PENDING"
    assert [row[1] for row in _lease(conn, testbus, 30)] == [2]
    assert _status(conn, sent.command_id) == "IN_PROGRESS"
    conn.execute(expire, (msg_id,))
    conn.commit()
    assert _status(conn, sent.command_id) == "PENDING"
