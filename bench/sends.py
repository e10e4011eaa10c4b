"""cbus on the sending side, and the latency from a sender's commit to its handler's start."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cbus
import floor
import psycopg
from env import interleave, ping_kwargs, settle


def _pings(n: int) -> list[dict[str, Any]]:
    return [ping_kwargs(i) for i in range(n)]


def send_op(bench: Any, target: Any, n: int) -> Callable[[int], None]:
    """The generated sender for command i, one per transaction.

    On an autocommit connection (or a `Bus`) the sender's one statement (log insert,
    pgmq.send, pg_notify) is its own transaction; on a connection in a transaction
    block the caller commits after each send.
    """
    kwargs = _pings(n)
    commit = isinstance(target, psycopg.Connection) and not target.autocommit

    def op(i: int) -> None:
        bench.send_ping(target, **kwargs[i])
        if commit:
            target.commit()

    return op


def send_business_op(bench: Any, conn: psycopg.Connection[Any], n: int) -> Callable[[int], None]:
    """A business row and its command in one transaction: INSERT, send, COMMIT."""
    kwargs = _pings(n)

    def op(i: int) -> None:
        kw = kwargs[i]
        conn.execute(
            "INSERT INTO bench_business (order_id, customer_id, amount) VALUES (%s, %s, %s)",
            (kw["order_id"], kw["customer_id"], kw["amount"]),
        )
        bench.send_ping(conn, **kw)
        conn.commit()

    return op


def send_many_op(
    bench: Any, conn: psycopg.Connection[Any], n: int, size: int = 100
) -> Callable[[int], None]:
    """`cbus.send_many` of commands i .. i + size, atomically (autocommit connection)."""
    commands = [bench.Ping(**kw) for kw in _pings(n)]

    def op(i: int) -> None:
        cbus.send_many(conn, commands[i : i + size])

    return op


def one_per_transaction(dsn: str, bench: Any, n: int) -> dict[str, float]:
    """The floor's and cbus's single sends, interleaved in blocks of 100 (see `interleave`)."""
    from psycopg_pool import ConnectionPool

    def connect(autocommit: bool) -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=autocommit)

    conns = {name: connect(ac) for name, ac in (("ac", True), ("tx", False), ("raw_ac", True))}
    conns |= {name: connect(False) for name in ("raw_tx", "raw_biz", "biz")}
    pool = ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True)
    bus = cbus.Bus(dsn, max_size=1).open()
    bus_ac = cbus.Bus(pool).open()
    try:
        ops = {
            "raw send, autocommit": floor.send_op(conns["raw_ac"], n),
            "cbus send, autocommit connection": send_op(bench, conns["ac"], n),
            "raw send, BEGIN/send/COMMIT": floor.send_op(conns["raw_tx"], n),
            "cbus send, commit each": send_op(bench, conns["tx"], n),
            "raw business row + send, COMMIT": floor.send_business_op(conns["raw_biz"], n),
            "cbus business row + send, COMMIT": send_business_op(bench, conns["biz"], n),
            "cbus send, Bus (pool)": send_op(bench, bus, n),
            "cbus send, Bus (autocommit pool)": send_op(bench, bus_ac, n),
        }
        return interleave(ops, n, block=100, step=1)
    finally:
        bus.close()
        bus_ac.close()
        pool.close()
        for conn in conns.values():
            conn.close()


def groups_of_100(dsn: str, bench: Any, n: int) -> dict[str, float]:
    """pgmq.send_batch(100) and cbus.send_many(100), interleaved a batch at a time."""
    with (
        psycopg.connect(dsn, autocommit=True) as raw_conn,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        ops = {
            "raw send_batch(100)": floor.send_batch_op(raw_conn, n),
            "cbus send_many(100)": send_many_op(bench, conn, n),
        }
        return interleave(ops, n, block=100, step=100)


def fill(dsn: str, bench: Any, n: int) -> None:
    """Put n logged commands on the benchmark queue, 100 per send_many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        op = send_many_op(bench, conn, n)
        for i in range(0, n, 100):
            op(i)
    settle(dsn)


def latency(
    dsn: str,
    bench: Any,
    n: int,
    *,
    concurrency: int,
    use_async: bool,
    interval: float | None = None,
) -> list[float]:
    """Send n commands to a running worker; returns each one's commit -> handler start, in s.

    The clock starts just before the sender's COMMIT and stops when the handler is
    entered; the worker wakes on the sender's NOTIFY. With `interval` None, each
    command is sent once the previous one was handled (the worker is otherwise idle);
    with an interval, one is sent every `interval` seconds whatever the worker does.
    """
    started: dict[int, float] = {}
    lock = threading.Lock()
    handled = threading.Event()

    def seen(seq: int) -> None:
        now = time.perf_counter()
        with lock:
            started[seq] = now
        handled.set()

    if use_async:

        class AsyncHandler(bench.BenchAsyncHandlers):  # type: ignore[misc,name-defined]
            async def ping(self, cmd: Any, ctx: Any) -> None:
                seen(cmd.seq)

        handler: Any = AsyncHandler()
    else:

        class SyncHandler(bench.BenchHandlers):  # type: ignore[misc,name-defined]
            def ping(self, cmd: Any, ctx: Any) -> None:
                seen(cmd.seq)

        handler = SyncHandler()

    worker = cbus.Worker(dsn, [handler], concurrency=concurrency)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    committed: dict[int, float] = {}
    try:
        with psycopg.connect(dsn) as conn:
            # Warm up: the worker's connections and LISTEN are up once a command ran.
            for seq in range(-5, 0):
                handled.clear()
                bench.send_ping(conn, **ping_kwargs(seq))
                conn.commit()
                if not handled.wait(5.0):
                    raise RuntimeError("The worker handled no command within 5 s")
            next_at = time.perf_counter()
            for seq in range(n):
                handled.clear()
                bench.send_ping(conn, **ping_kwargs(seq))
                committed[seq] = time.perf_counter()
                conn.commit()
                if interval is None:
                    if not handled.wait(5.0):
                        raise RuntimeError(f"Command {seq} not handled within 5 s")
                    time.sleep(0.002)
                else:
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.monotonic() + 10
        while len(started) < n + 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join(10)
    missing = [seq for seq in committed if seq not in started]
    if missing:
        raise RuntimeError(f"{len(missing)} commands not handled within 10 s")
    return [started[seq] - t0 for seq, t0 in committed.items()]
