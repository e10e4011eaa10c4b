"""The Python peers, used as their own documentation says, each with a no-op handler.

- reliable-cmd 0.2.2 (`commandbus`), a command bus over PGMQ: `CommandBus.send_batch`
  to fill, `Worker.run(concurrency=N)` to drain. Its `PgmqClient._read` runs
  `SELECT * FROM pgmq.read(...)` and takes columns by position (msg_id, read_ct,
  enqueued_at, vt, message); PGMQ 1.13 returns seven columns (`last_read_at` after
  `enqueued_at`, `headers` last), so `row[4]` is `vt` and every message fails. The
  benchmark replaces that one method with one that names the five columns it
  expects; nothing else of reliable-cmd is changed. Its schema script starts with
  `CREATE EXTENSION pgmq`; here PGMQ is installed as SQL by `cbus.install`, so that
  line is skipped.
- pgqueuer 1.6, a job queue on its own table: `Queries.enqueue` with lists to fill,
  `QueueManager.run(mode=drain)` to drain, through its asyncpg driver (the one its
  documentation leads with) or its psycopg driver, which waits for notifications
  on the one connection its queries also need.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg

RCMD_DOMAIN = "rcmd"
RCMD_QUEUE = f"{RCMD_DOMAIN}__commands"


def _rcmd_patch() -> None:
    """Select the five columns reliable-cmd's reader expects, by name (PGMQ 1.13 fix)."""
    import json

    from commandbus.pgmq import client

    async def _read(
        self: Any, conn: Any, queue_name: str, visibility_timeout: int, batch_size: int
    ) -> list[Any]:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT msg_id, read_ct, enqueued_at, vt, message FROM pgmq.read(%s, %s, %s)",
                (queue_name, visibility_timeout, batch_size),
            )
            rows = await cur.fetchall()
            return [
                client.PgmqMessage(
                    msg_id=row[0],
                    read_count=row[1],
                    enqueued_at=str(row[2]),
                    vt=str(row[3]),
                    message=json.loads(row[4]) if isinstance(row[4], str) else row[4],
                )
                for row in rows
            ]

    client.PgmqClient._read = _read  # type: ignore[method-assign]


async def rcmd_install(dsn: str) -> None:
    from importlib.resources import files

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regnamespace('commandbus') IS NOT NULL")
        row = await cur.fetchone()
        if row and row[0]:
            return
        migrations = files("commandbus.migrations")
        for name in ("V001__commandbus_schema.sql", "V002__add_failed_count.sql"):
            text = migrations.joinpath(name).read_text("utf-8")
            text = text.replace("CREATE EXTENSION IF NOT EXISTS pgmq;", "")
            await conn.execute(text)
        await conn.execute("SET search_path TO DEFAULT")
        await conn.execute("SELECT pgmq.create(%s)", (RCMD_QUEUE,))


async def rcmd_reset(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f"TRUNCATE pgmq.q_{RCMD_QUEUE}, pgmq.a_{RCMD_QUEUE}, commandbus.command,"
            " commandbus.audit, commandbus.batch"
        )


def _rcmd_data(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "order_id": str(uuid.uuid4()),
        "customer_id": f"customer-{seq % 97}",
        "amount": "19.99",
    }


async def rcmd_fill(dsn: str, n: int, singles: int) -> dict[str, float]:
    """Send `singles` commands one per transaction (timed), the rest with send_batch."""
    from commandbus import CommandBus, SendRequest
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        bus = CommandBus(pool)
        start = time.perf_counter()
        for i in range(singles):
            await bus.send(RCMD_DOMAIN, "Ping", uuid.uuid4(), _rcmd_data(i))
        single_rate = singles / (time.perf_counter() - start) if singles else 0.0
        requests = [
            SendRequest(
                domain=RCMD_DOMAIN, command_type="Ping", command_id=uuid.uuid4(), data=_rcmd_data(i)
            )
            for i in range(singles, n)
        ]
        start = time.perf_counter()
        for i in range(0, len(requests), 100):
            await bus.send_batch(requests[i : i + 100])
        batch_rate = len(requests) / (time.perf_counter() - start) if requests else 0.0
    return {"send_per_s": single_rate, "send_batch_per_s": batch_rate}


async def rcmd_drain(dsn: str, n: int, concurrency: int) -> dict[str, Any]:
    """Drain n commands with reliable-cmd's Worker; times from start to the n-th completion."""
    from commandbus import HandlerRegistry, Worker
    from psycopg_pool import AsyncConnectionPool

    _rcmd_patch()
    registry = HandlerRegistry()

    @registry.handler(RCMD_DOMAIN, "Ping")
    async def ping(command: Any, context: Any) -> None:
        return None

    size = concurrency + 2
    async with AsyncConnectionPool(dsn, min_size=size, max_size=size, open=False) as pool:
        await pool.open(wait=True)
        worker = Worker(pool, domain=RCMD_DOMAIN, registry=registry, visibility_timeout=30)
        done = 0
        finished = asyncio.Event()
        complete = worker.complete

        async def counted(received: Any, result: Any = None) -> None:
            nonlocal done
            await complete(received, result=result)
            done += 1
            if done >= n:
                finished.set()

        worker.complete = counted  # type: ignore[method-assign]
        start = time.perf_counter()
        task = asyncio.create_task(worker.run(concurrency=concurrency, poll_interval=1.0))
        try:
            await asyncio.wait_for(finished.wait(), timeout=600)
        finally:
            elapsed = time.perf_counter() - start
            await worker.stop(timeout=10)
            await task
    return {"elapsed": elapsed, "completed": done}


# -- pgqueuer -----------------------------------------------------------------------


class _AsyncpgConnection:
    """An asyncpg connection closed by `async with`, as psycopg's is."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def __aenter__(self) -> Any:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()


async def _pgq_connect(dsn: str, driver: str = "asyncpg") -> Any:
    from pgqueuer import Queries

    if driver == "asyncpg":
        import asyncpg
        from pgqueuer.db import AsyncpgDriver

        conn = await asyncpg.connect(dsn)
        return _AsyncpgConnection(conn), Queries(AsyncpgDriver(conn))
    aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return aconn, Queries.from_psycopg_connection(aconn)


async def pgq_install(dsn: str) -> None:
    conn, queries = await _pgq_connect(dsn)
    async with conn:
        if not await queries.schema_is_installed():
            await queries.install()


async def pgq_reset(dsn: str) -> None:
    conn, queries = await _pgq_connect(dsn)
    async with conn:
        await queries.clear_queue()
        await queries.clear_queue_log()
        await queries.clear_statistics_log()


async def pgq_fill(dsn: str, n: int, singles: int) -> dict[str, float]:
    """Enqueue `singles` jobs one per statement (timed), the rest 100 per call."""
    import msgspec

    conn, queries = await _pgq_connect(dsn)
    async with conn:
        encode = msgspec.json.encode
        start = time.perf_counter()
        for i in range(singles):
            await queries.enqueue("ping", encode(_rcmd_data(i)))
        single_rate = singles / (time.perf_counter() - start) if singles else 0.0
        start = time.perf_counter()
        for i in range(singles, n, 100):
            k = min(100, n - i)
            await queries.enqueue(
                ["ping"] * k, [encode(_rcmd_data(i + j)) for j in range(k)], [0] * k
            )
        rest = n - singles
        batch_rate = rest / (time.perf_counter() - start) if rest else 0.0
    return {"send_per_s": single_rate, "send_batch_per_s": batch_rate}


async def pgq_drain(dsn: str, n: int, batch_size: int, driver: str) -> dict[str, Any]:
    """Drain with `QueueManager.run(mode=drain)`; returns once the queue is empty."""
    from pgqueuer import QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn, queries = await _pgq_connect(dsn, driver)
    done = 0
    async with conn:
        qm = QueueManager(queries)

        @qm.entrypoint("ping")
        async def ping(job: Any) -> None:
            nonlocal done
            done += 1

        start = time.perf_counter()
        await qm.run(
            mode=QueueExecutionMode.drain,
            batch_size=batch_size,
            dequeue_timeout=timedelta(seconds=1),
        )
        elapsed = time.perf_counter() - start
    async with await psycopg.AsyncConnection.connect(dsn) as check:
        cur = await check.execute("SELECT count(*) FROM pgqueuer")
        row = await cur.fetchone()
        left = int(row[0]) if row else -1
    return {"elapsed": elapsed, "completed": done, "left": left}
