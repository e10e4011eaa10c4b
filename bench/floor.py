"""The floor: plain PGMQ through psycopg, the way a careful user would call it.

Each statement runs on an autocommit connection, so one statement is one
transaction and one round trip. Messages carry the same JSON (message and headers)
as the cbus cases. Reads load jsonb with psycopg's default loader (a JSON parse),
as a raw client gets it. Psycopg prepares each statement after 5 executions, for
both the floor and cbus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from env import RAW_QUEUE, ping_kwargs, queue_depth, rate, raw_message, settle

SEND = "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb)"
SEND_BATCH = "SELECT pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])"
READ = "SELECT msg_id, read_ct, message, headers FROM pgmq.read(%s, 30, %s)"
DELETE_ONE = "SELECT pgmq.delete(%s, %s::bigint)"
DELETE_MANY = "SELECT pgmq.delete(%s, %s::bigint[])"


def _messages(n: int) -> tuple[list[str], list[str]]:
    pairs = [raw_message(i) for i in range(n)]
    return [m for m, _ in pairs], [h for _, h in pairs]


def fill(dsn: str, n: int) -> None:
    """Put n messages on the floor's queue, 100 per send_batch."""
    messages, headers = _messages(n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(0, n, 100):
            conn.execute(SEND_BATCH, (RAW_QUEUE, messages[i : i + 100], headers[i : i + 100]))
    settle(dsn)


def send_op(conn: psycopg.Connection[Any], n: int) -> Callable[[int], None]:
    """pgmq.send of message i, one per transaction: autocommit, or BEGIN / send / COMMIT."""
    messages, headers = _messages(n)

    def op(i: int) -> None:
        conn.execute(SEND, (RAW_QUEUE, messages[i], headers[i])).fetchone()
        if not conn.autocommit:
            conn.commit()

    return op


def send_business_op(conn: psycopg.Connection[Any], n: int) -> Callable[[int], None]:
    """A business row and pgmq.send in one transaction: INSERT, send, COMMIT."""
    messages, headers = _messages(n)
    rows = [ping_kwargs(i) for i in range(n)]

    def op(i: int) -> None:
        row = rows[i]
        conn.execute(
            "INSERT INTO bench_business (order_id, customer_id, amount) VALUES (%s, %s, %s)",
            (row["order_id"], row["customer_id"], row["amount"]),
        )
        conn.execute(SEND, (RAW_QUEUE, messages[i], headers[i])).fetchone()
        conn.commit()

    return op


def send_batch_op(conn: psycopg.Connection[Any], n: int, size: int = 100) -> Callable[[int], None]:
    """pgmq.send_batch of messages i .. i + size in one statement (autocommit)."""
    messages, headers = _messages(n)

    def op(i: int) -> None:
        conn.execute(
            SEND_BATCH, (RAW_QUEUE, messages[i : i + size], headers[i : i + size])
        ).fetchall()

    return op


def read_delete(dsn: str, n: int, qty: int) -> float:
    """Drain n messages: read(qty), then delete them (one id, or an array of ids)."""
    fill(dsn, n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = 0

        def run() -> None:
            nonlocal done
            while done < n:
                rows: list[Any] = conn.execute(READ, (RAW_QUEUE, qty)).fetchall()
                if not rows:
                    break
                if qty == 1:
                    conn.execute(DELETE_ONE, (RAW_QUEUE, rows[0][0])).fetchall()
                else:
                    conn.execute(DELETE_MANY, (RAW_QUEUE, [r[0] for r in rows])).fetchall()
                done += len(rows)

        result = rate(n, run)
        assert done == n and queue_depth(conn, RAW_QUEUE) == 0, (done, n)
        return result
