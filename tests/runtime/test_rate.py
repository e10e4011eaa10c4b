"""Rate limits (contract section 13): held in the database across worker processes.

The `paced` domain (tests/schemas/paced.yaml): `Tick` at 20/s for all, `Keyed` at 5/s
per account, `Free` unlimited. Handlers record each start's clock_timestamp() in the
table `starts` (tests/paced_handlers.py); in every window of T seconds at most
rate x T + 1 starts may fall.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import cbus
import psycopg
import pytest
from cbus._rate_limit import RateLimits
from cbus._worker_domain import DomainRuntime
from psycopg.conninfo import make_conninfo

from .helpers import running, wait_for

ROOT = Path(__file__).resolve().parents[2]
CBUS = Path(sys.executable).with_name("cbus")


@pytest.fixture
def paced(testbus: ModuleType) -> ModuleType:
    import importlib

    return importlib.import_module("tbpkg.paced")


@pytest.fixture
def starts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(
        "CREATE TABLE starts (kind text, key text, at timestamptz, command_id uuid UNIQUE)"
    )
    conn.commit()
    return conn


class Workers:
    """`cbus worker` processes serving `paced`, logging to files."""

    def __init__(self, dsn: str, generated: Path, log_dir: Path, env: dict[str, str]) -> None:
        self.dsn = dsn
        self.log_dir = log_dir
        self.env = {**os.environ, **env}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(generated), str(ROOT), os.environ.get("PYTHONPATH")) if p
        )
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = []

    def start(self, name: str, concurrency: int = 4) -> None:
        path = self.log_dir / f"{name}.log"
        log = open(path, "wb")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [
                str(CBUS),
                "worker",
                "tests.paced_handlers:make_paced",
                "--dsn",
                make_conninfo(self.dsn, application_name=name),
                "--concurrency",
                str(concurrency),
                "--poll-interval",
                "0.2",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append((proc, log, path))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for _, _, p in self.procs)

    def stop(self) -> None:
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, log, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture
def workers(dsn: str, testbus: ModuleType, tmp_path: Path) -> Iterator[Workers]:
    fleet = Workers(dsn, Path(testbus.__file__).parent.parent, tmp_path, {})
    try:
        yield fleet
    finally:
        fleet.stop()


def _times(conn: psycopg.Connection[Any], kind: str, key: str | None = None) -> list[float]:
    rows = conn.execute(
        "SELECT extract(epoch FROM at)::float8 FROM starts"
        " WHERE kind = %s AND key IS NOT DISTINCT FROM %s ORDER BY at",
        (kind, key),
    ).fetchall()
    conn.commit()
    return [r[0] for r in rows]


def _densest(times: Sequence[float], window: float) -> int:
    """The most starts in any window of `window` seconds (both ends included)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j + 1 < len(times) and times[j + 1] - t <= window:
            j += 1
        best = max(best, j - i + 1)
    return best


def _count(conn: psycopg.Connection[Any]) -> int:
    # The domain's every-minute schedule may fire a Beat during a test: not counted.
    row = conn.execute("SELECT count(*) FROM starts WHERE kind <> 'Beat'").fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def test_rate_is_held_across_two_worker_processes_and_per_key(
    starts: psycopg.Connection[Any], paced: ModuleType, workers: Workers
) -> None:
    conn = starts
    with conn.transaction():
        for n in range(50):
            paced.send_tick(conn, n=n)
        for n in range(24):
            paced.send_keyed(conn, account=("a", "b")[n % 2], n=n)
        for n in range(100):
            paced.send_free(conn, n=n)
    workers.start("w1")
    workers.start("w2")
    try:
        wait_for(lambda: _count(conn) == 174, timeout=60)
    except AssertionError:  # pragma: no cover - shown on failure
        pytest.fail(f"{_count(conn)} of 174 started\n{workers.logs()}")
    ticks = _times(conn, "Tick")
    for window in (0.25, 0.5, 1.0, 2.0):
        assert _densest(ticks, window) <= 20 * window + 1, (window, ticks)
    for account in ("a", "b"):
        keyed = _times(conn, "Keyed", account)
        assert len(keyed) == 12
        for window in (0.5, 1.0, 2.0):
            assert _densest(keyed, window) <= 5 * window + 1, (account, window, keyed)
    # Per key, not one limit for all accounts: both run in the same second.
    both = sorted(_times(conn, "Keyed", "a") + _times(conn, "Keyed", "b"))
    assert _densest(both, 1.0) > 5 + 1
    # Held back is not an attempt: every command completed on its first.
    rows = conn.execute(
        "SELECT status, attempts, count(*) FROM cbus.command WHERE domain = 'paced'"
        " AND kind <> 'paced.Beat' GROUP BY status, attempts"
    ).fetchall()
    assert rows == [("COMPLETED", 1, 174)]
    # Both workers started limited commands (the limit is not one worker's).
    row = conn.execute(
        "SELECT count(DISTINCT application_name) FROM pg_stat_activity"
        " WHERE application_name IN ('w1', 'w2')"
    ).fetchone()
    assert row == (2,)


def test_a_command_held_back_reads_pending_and_is_not_an_attempt(
    dsn: str, starts: psycopg.Connection[Any], paced: ModuleType
) -> None:
    import tests.paced_handlers as handlers

    conn = starts
    with conn.transaction():
        for n in range(8):
            paced.send_keyed(conn, account="solo", n=n)  # 5/s: about 1.4 s for 8
    seen: list[tuple[str, int, int]] = []

    def held() -> bool:
        # Messages put back by the limit: not leased (read_ct undone), due later.
        rows = conn.execute(
            "SELECT c.status, c.attempts, q.read_ct FROM pgmq.q_paced__commands AS q"
            " JOIN cbus.command AS c ON c.command_id = (q.headers ->> 'command_id')::uuid"
            " WHERE q.vt > clock_timestamp() AND q.read_ct = 0"
        ).fetchall()
        conn.commit()
        seen.extend(rows)
        return bool(rows)

    with running(dsn, handlers.make_paced(), concurrency=2, poll_interval=0.05):
        wait_for(held, timeout=20)
        assert all(row == ("PENDING", 0, 0) for row in seen), seen
        held_id = _held_id(conn)
        if held_id is not None:  # still held back: its record reads PENDING
            record = cbus.get_command(conn, "paced", held_id)
            assert record is not None and record.status in ("PENDING", "COMPLETED")
        conn.commit()
        wait_for(lambda: _count(conn) == 8, timeout=20)
    rows = conn.execute(  # the Keyed commands above (the domain's schedule may fire too)
        "SELECT status, attempts FROM cbus.command WHERE domain = 'paced' AND kind = 'paced.Keyed'"
    ).fetchall()
    assert len(rows) == 8 and set(rows) == {("COMPLETED", 1)}


def _held_id(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute(
        "SELECT (headers ->> 'command_id')::uuid FROM pgmq.q_paced__commands"
        " WHERE vt > clock_timestamp() AND read_ct = 0 LIMIT 1"
    ).fetchone()
    return None if row is None else row[0]


def test_buckets_domain_wide_per_kind_and_per_key(paced: ModuleType) -> None:
    spec = paced.DOMAIN
    limits = RateLimits.of(spec)
    assert limits is not None
    assert set(limits.by_kind) == {"paced.Tick", "paced.Keyed"}  # Free and Beat pay nothing
    tick, keyed = limits.by_kind["paced.Tick"], limits.by_kind["paced.Keyed"]
    assert (tick.scope, tick.interval, tick.key) == ("paced.Tick", 0.05, None)
    assert keyed.bucket(paced.Keyed(account="x", n=1)) == 'paced.Keyed:"x"'
    # A domain's own limit is one bucket for the commands that inherit it.
    shared = cbus.registry.RateLimit(count=2, per_seconds=1)
    domain_opts = dataclasses.replace(spec.options, rate_limit=shared)
    commands = tuple(
        dataclasses.replace(c, options=dataclasses.replace(c.options, rate_limit=shared))
        if c.options.rate_limit is None
        else c
        for c in spec.commands
    )
    limits = RateLimits.of(dataclasses.replace(spec, options=domain_opts, commands=commands))
    assert limits is not None
    assert limits.by_kind["paced.Free"].scope == limits.by_kind["paced.Beat"].scope == "*"
    assert limits.by_kind["paced.Tick"].scope == "paced.Tick"


def test_unlimited_domains_have_no_rate_limits(testbus: ModuleType, paced: ModuleType) -> None:
    assert RateLimits.of(testbus.DOMAIN) is None

    class Handlers(paced.PacedHandlers):
        pass

    assert DomainRuntime.of(Handlers()).rate is not None


def test_concurrent_takes_never_start_more_than_the_rate_allows(dsn: str) -> None:
    """Six connections take from one bucket as fast as they can: at most rate x T + 1."""
    import threading
    import uuid

    from cbus._queries import query

    statement = query("rate_take", "paced__commands")
    granted: list[int] = []
    barrier = threading.Barrier(6)
    stop = threading.Event()

    def take(seed: int) -> None:
        n = 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            i = 0
            while not stop.is_set():
                i += 1
                params = {
                    "domain": "paced",
                    "msg_ids": [seed * 1_000_000 + i],
                    "read_cts": [1],
                    "command_ids": [uuid.uuid4()],
                    "buckets": ["hammered"],
                    "intervals": [0.02],  # 50/s
                }
                if not conn.execute(statement, params).fetchall():
                    n += 1  # nothing held back: it may start
        granted.append(n)

    with psycopg.connect(dsn, autocommit=True) as conn:
        threads = [threading.Thread(target=take, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        stop.wait(1.5)
        stop.set()
        for t in threads:
            t.join(30)
        end = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and end is not None
    elapsed = (end[0] - row[0]).total_seconds()
    assert len(granted) == 6
    assert 1 <= sum(granted) <= 50 * elapsed + 1, (granted, elapsed)
