"""Small helpers shared by the runtime tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cbus
import psycopg


def queue_depth(conn: psycopg.Connection[Any], queue: str) -> int:
    row = conn.execute(
        psycopg.sql.SQL("SELECT count(*) FROM {}").format(
            psycopg.sql.Identifier("pgmq", "q_" + queue)
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


def archive_depth(conn: psycopg.Connection[Any], queue: str) -> int:
    row = conn.execute(
        psycopg.sql.SQL("SELECT count(*) FROM {}").format(
            psycopg.sql.Identifier("pgmq", "a_" + queue)
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


def drain(dsn: str, handlers: list[object], **options: Any) -> cbus.Worker:
    """Run a worker until no command is due, and return it for its counters."""
    options.setdefault("concurrency", 2)
    options.setdefault("poll_interval", 0.05)
    worker = cbus.Worker(dsn, handlers, **options)
    worker.run(until_idle=True)
    return worker


@contextmanager
def running(dsn: str, handlers: list[object], **options: Any) -> Iterator[cbus.Worker]:
    """A worker running in a thread for the duration of the block."""
    options.setdefault("poll_interval", 0.05)
    worker = cbus.Worker(dsn, handlers, **options)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop within 30 s"
        if errors:
            raise errors[0]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def statuses(conn: psycopg.Connection[Any], domain: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM cbus.command WHERE domain = %s GROUP BY status", (domain,)
    ).fetchall()
    conn.commit()
    return {status: int(n) for status, n in rows}
