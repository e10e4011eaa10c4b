"""Sync and async primitives under paired names, so the worker is written once.

The worker's `*_async.py` modules use the async names; `tools/async_to_sync.py` maps
each to its sync twin (`AEvent` -> `Event`, `aspawn` -> `spawn`, ...) to write `X.py`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import psycopg
from psycopg import pq

__all__ = [
    "AEvent",
    "ALock",
    "abounded",
    "acancel",
    "bounded",
    "acancelled_by_worker",
    "Event",
    "Lock",
    "agather",
    "aexecute_bare",
    "asleep",
    "aspawn",
    "cancel",
    "cancelled_by_worker",
    "current_caller",
    "finished",
    "gather",
    "monotonic",
    "execute_bare",
    "sleep",
    "spawn",
]

Lock = threading.Lock
ALock = asyncio.Lock
monotonic = time.monotonic


class Event(threading.Event):
    def wait_for(self, timeout: float) -> bool:
        return self.wait(timeout)


class AEvent(asyncio.Event):
    async def wait_for(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            return False
        return True


def spawn(target: Callable[..., Any], *args: Any, name: str = "") -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name or None, daemon=True)
    thread.start()
    return thread


def aspawn(
    target: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str = ""
) -> asyncio.Task[Any]:
    return asyncio.create_task(target(*args), name=name or None)


def gather(*threads: threading.Thread, timeout: float | None = None) -> None:
    # Join in short steps so the main thread still runs signal handlers.
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        while thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            thread.join(0.2)


async def agather(*tasks: Awaitable[Any], timeout: float | None = None) -> None:
    if tasks:
        await asyncio.wait([asyncio.ensure_future(t) for t in tasks], timeout=timeout)


def finished(task: threading.Thread | asyncio.Task[Any]) -> bool:
    """Whether a consumer thread or task has returned."""
    return task.done() if isinstance(task, asyncio.Task) else not task.is_alive()


def current_caller() -> tuple[int, object]:
    """The running thread, and the running asyncio task (None outside a loop)."""
    try:
        task: object = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), task


def bounded(value: Any, seconds: float) -> Any:
    """A sync handler cannot be interrupted: the heartbeat marks it when it runs late."""
    return value


async def abounded(call: Awaitable[Any], seconds: float) -> Any:
    """Await an async handler for at most `seconds`: then it is cancelled (TimeoutError)."""
    return await asyncio.wait_for(call, seconds)


def cancel(thread: threading.Thread) -> None:
    """Threads cannot be cancelled: `stop()` ends them once their batch is done."""


def acancel(task: asyncio.Task[Any]) -> None:
    task.cancel()


def cancelled_by_worker(exc: BaseException) -> bool:
    """Threads are never cancelled: whatever a sync handler raises is its own failure."""
    return False


def acancelled_by_worker(exc: BaseException) -> bool:
    """Whether a CancelledError is this task being cancelled, not one the handler raised.

    A handler's own CancelledError (an inner timeout, say) fails its command like any
    exception; the worker's task being cancelled must go on up.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def aexecute_bare(conn: psycopg.AsyncConnection[Any], statement: bytes) -> None:
    """Run a statement with neither parameters nor rows (BEGIN, SAVEPOINT)."""
    await conn.execute(statement, prepare=False)


def execute_bare(conn: psycopg.Connection[Any], statement: bytes) -> None:
    """The same through libpq's PQexec, which skips psycopg's cursor machinery.

    A handler's savepoint is one round trip more per writing handler; through
    `conn.execute` it cost about 20 us more on top of it (ADR 0002).
    """
    pgconn = conn.pgconn
    if pgconn.pipeline_status != pq.PipelineStatus.OFF:
        conn.execute(statement, prepare=False)
        return
    with conn.lock:
        result = pgconn.exec_(statement)
    if result.status == pq.ExecStatus.COMMAND_OK:
        return
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError(
            pgconn.get_error_message(conn.info.encoding) or "connection lost"
        )
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
