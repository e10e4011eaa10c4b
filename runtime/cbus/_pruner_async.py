"""The pruner: delete, in small batches, what retention says is due (contract section 9).

A pass takes a session advisory lock on its own autocommitted connection, so one
pruner runs per database; every statement is its own short transaction that visits
at most `BATCH` rows, walking each table oldest first: the command log by
(created_at, command_id), the audit trail by id, each PGMQ archive by archived_at.
Commands pending, in progress or in the troubleshooting queue are never deleted, nor
their audit rows or archived messages. A worker runs `prune_in_background_async`;
`cbus db prune` runs `prune` (the sync twin) at once. ADR 0009.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from ._acompat import AEvent, asleep, monotonic
from ._queries import query, raw
from ._retention import BATCH, PRUNE_LOCK_KEY, WHAT, Pruned, span_of
from ._worker_failure import safe_str
from .names import command_queue
from .pgmq import archive_table
from .registry import Retention

__all__ = ["known_domains_async", "prune_async", "prune_in_background_async"]

log = logging.getLogger("cbus.worker")

_EPOCH = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_NIL = uuid.UUID(int=0)
_DEFAULTS = dataclasses.asdict(Retention())


def _never() -> bool:
    return False


class _Pacer:
    """Sleeps after a statement `pace` times as long as the statement took."""

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self.since = monotonic()

    async def pause(self) -> None:
        if self.pace > 0:
            await asleep(min((monotonic() - self.since) * self.pace, 1.0))
        self.since = monotonic()


async def known_domains_async(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """The domains a pruner looks at: those with recorded retention or a queue."""
    cur = await conn.execute(raw("prune_domains"))
    return [row[0] for row in await cur.fetchall()]


async def prune_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    domains: Sequence[str] | None = None,
    dry_run: bool = False,
    wait: bool = False,
    batch: int = BATCH,
    stop: Callable[[], bool] = _never,
    pace: float = 0.0,
) -> list[Pruned] | None:
    """One pass over `domains` (None: every domain); None when another pruner holds the
    lock (with `wait`, wait for it instead). `conn` must be in autocommit mode.

    A dry run deletes nothing, takes no lock, and counts what would go. `pace`: after
    each statement, sleep that many times as long as it took (1.0: the pruner's
    connection is busy at most half the time; the worker's pruner paces so).
    """
    step = _Pacer(pace)
    if not conn.autocommit:
        raise ValueError("the pruner needs an autocommit connection (short transactions)")
    names = list(domains) if domains is not None else await known_domains_async(conn)
    if not dry_run:
        cur = await conn.execute(
            raw("prune_lock" if wait else "prune_try_lock"), {"key": PRUNE_LOCK_KEY}
        )
        row = await cur.fetchone()
        if not wait and (row is None or not row[0]):
            return None
    try:
        out = []
        for domain in names:
            cur = await conn.execute(raw("prune_retention"), {"domain": domain})
            span = span_of(await cur.fetchall())
            counts = dict.fromkeys(WHAT, 0)
            await _commands(conn, domain, span.commands, dry_run, batch, stop, counts, step)
            await _archive(conn, domain, span.archive, dry_run, batch, stop, counts, step)
            out.append(Pruned(domain, counts))
        audited = await _audit(conn, names, domains is None, dry_run, batch, stop, step)
        for pruned in out:
            pruned.counts["audit"] = audited.get(pruned.domain, 0)
        return out
    finally:
        if not dry_run and not conn.closed and not conn.broken:
            await conn.execute(raw("prune_unlock"), {"key": PRUNE_LOCK_KEY})


async def _commands(
    conn: psycopg.AsyncConnection[Any],
    domain: str,
    min_seconds: int,
    dry_run: bool,
    batch: int,
    stop: Callable[[], bool],
    counts: dict[str, int],
    step: _Pacer,
) -> None:
    statement = query("prune_commands", command_queue(domain), limit=batch)
    after: tuple[dt.datetime, uuid.UUID] = (_EPOCH, _NIL)
    while not stop():
        cur = await conn.execute(
            statement,
            {
                "domain": domain,
                "min_seconds": min_seconds,
                "after_at": after[0],
                "after_id": after[1],
                "dry_run": dry_run,
                **_DEFAULTS,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        await step.pause()
        last_at, last_id, scanned, completed, failed, canceled = row
        counts["completed"] += completed
        counts["failed"] += failed
        counts["canceled"] += canceled
        if scanned < batch:
            return
        after = (last_at, last_id)


async def _archive(
    conn: psycopg.AsyncConnection[Any],
    domain: str,
    min_seconds: int,
    dry_run: bool,
    batch: int,
    stop: Callable[[], bool],
    counts: dict[str, int],
    step: _Pacer,
) -> None:
    queue = command_queue(domain)
    table = archive_table(queue)
    cur = await conn.execute(raw("prune_archive_exists"), {"a": table.as_string(None)})
    row = await cur.fetchone()
    if row is None or not row[0]:
        return
    statement = query("prune_archive", queue, limit=batch)
    after: tuple[dt.datetime, int] = (_EPOCH, 0)
    while not stop():
        cur = await conn.execute(
            statement,
            {
                "domain": domain,
                "min_seconds": min_seconds,
                "after_at": after[0],
                "after_id": after[1],
                "dry_run": dry_run,
                "archive": _DEFAULTS["archive"],
            },
        )
        row = await cur.fetchone()
        assert row is not None
        await step.pause()
        last_at, last_id, scanned, removed = row
        counts["archive"] += removed
        if scanned < batch:
            return
        after = (last_at, last_id)


async def _audit(
    conn: psycopg.AsyncConnection[Any],
    names: list[str],
    every: bool,
    dry_run: bool,
    batch: int,
    stop: Callable[[], bool],
    step: _Pacer,
) -> dict[str, int]:
    """One walk of the audit trail for all `names` (`every`: no domain filter)."""
    out: dict[str, int] = {}
    if not names:
        return out
    spans = []
    for domain in names:
        cur = await conn.execute(raw("prune_retention"), {"domain": domain})
        spans.append(span_of(await cur.fetchall()).audit)
    targets: list[str | None] = [None] if every else list(names)
    statement = query("prune_audit", command_queue(names[0]), limit=batch)  # no {q}: any
    for only in targets:
        after = 0
        while not stop():
            cur = await conn.execute(
                statement,
                {
                    "domain": only,
                    "after": after,
                    "min_seconds": min(spans),
                    "dry_run": dry_run,
                    "audit": _DEFAULTS["audit"],
                },
            )
            row = await cur.fetchone()
            assert row is not None
            await step.pause()
            last, newest, removed = row
            for name, n in removed.items():
                out[name] = out.get(name, 0) + n
            if last is None or newest:
                break
            after = last
    return out


async def prune_in_background_async(
    dsn: str,
    connect_kwargs: dict[str, Any],
    stopping: AEvent,
    interval: float,
    batch: int = BATCH,
) -> None:
    """A worker's pruner: a pass soon after start, then every `interval` seconds, until
    `stopping` is set. A pass that finds another pruner at work waits for the next.
    Without the grants to delete (a least-privilege worker role) it says so once and
    stops: run `cbus db prune` as the tables' owner instead (docs/retention.md)."""
    delay = min(interval, 5.0)
    while not await stopping.wait_for(delay):
        delay = interval
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect_kwargs)
            async with conn:
                done = await prune_async(conn, batch=batch, stop=stopping.is_set, pace=1.0)
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning(
                "retention: this worker's role may not prune (%s); run `cbus db prune` "
                "as the role that owns cbus's tables, from a scheduler",
                safe_str(exc).splitlines()[0],
                extra={"action": "prune_not_allowed"},
            )
            return
        except psycopg.OperationalError as exc:  # the consumers report outages
            log.debug("retention: pass skipped: %s", safe_str(exc))
            continue
        except psycopg.Error as exc:  # said at each pass that fails, tried again at the next
            log.warning(
                "retention: pass failed, next in %g s: %s: %s",
                interval,
                type(exc).__qualname__,
                safe_str(exc).splitlines()[0] if safe_str(exc) else "",
                extra={"action": "prune_failed"},
            )
            continue
        if done is None:
            log.debug("retention: another pruner holds the lock", extra={"action": "prune_skipped"})
            continue
        for pruned in done:
            if pruned.total:
                log.info(
                    "retention: pruned %s in %s",
                    ", ".join(f"{n} {what}" for what, n in pruned.counts.items() if n),
                    pruned.domain,
                    extra={"action": "pruned", "domain": pruned.domain, **pruned.counts},
                )
