"""Chaos: `cbus worker` processes killed at random moments, PostgreSQL restarted mid-run.

Afterwards no command is lost, every command is COMPLETED, the queue is empty, and the
rows the handlers wrote through `ctx.conn` exist exactly once per command. Workers run
as real processes (the `cbus worker` command) with the handlers of
`tests/chaos_handlers.py`; the `chaos` domain (tests/schemas/chaos.yaml) allows far
more attempts than the run makes kills, so no command is set aside as CRASH_LOOP.

`CBUS_CHAOS_SECONDS` (default 40) sets the length of the chaos phase and
`CBUS_CHAOS_SEED` the random seed, printed in every failure.
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO

import cbus
import psycopg
import pytest
from cbus.devdb import DevServer
from psycopg.conninfo import make_conninfo

from .helpers import archive_depth, queue_depth, wait_for

ROOT = Path(__file__).resolve().parents[2]
CBUS = Path(sys.executable).with_name("cbus")
QUEUE = "chaos__commands"


class WorkerProcess:
    """One `cbus worker` process; its output goes to a log file."""

    def __init__(
        self,
        name: str,
        dsn: str,
        factory: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        concurrency: int,
        batch_size: int = 100,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in reap()
        self.started = self.termed = time.monotonic()
        self.proc = subprocess.Popen(
            [
                str(CBUS),
                "worker",
                factory,
                "--dsn",
                make_conninfo(dsn, application_name=name),
                "--concurrency",
                str(concurrency),
                "--batch-size",
                str(batch_size),
                "--poll-interval",
                "0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.reap(10)

    def terminate(self, timeout: float = 30) -> tuple[int | None, float]:
        """SIGTERM, then wait: (exit status or None when it hung, seconds it took)."""
        self.term()
        return self.finish(timeout)

    def term(self) -> None:
        self.termed = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)

    def finish(self, timeout: float = 30) -> tuple[int | None, float]:
        """Wait for the exit after `term()`: (exit status or None when it hung, seconds)."""
        start = self.termed
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
            self.proc.kill()
        elapsed = time.monotonic() - start
        self.reap(10)
        return rc, elapsed

    def reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        text = self.log().splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)


class Fleet:
    """The worker processes of a test; `close()` kills whatever is still running."""

    def __init__(self, dsn: str, generated: Path, log_dir: Path) -> None:
        self.dsn = dsn
        self.log_dir = log_dir
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(generated), str(ROOT), os.environ.get("PYTHONPATH")) if p
        )
        self.all: list[WorkerProcess] = []

    def start(self, factory: str, *, concurrency: int, batch_size: int = 100) -> WorkerProcess:
        worker = WorkerProcess(
            f"w{len(self.all) + 1:02d}",
            self.dsn,
            factory,
            self.env,
            self.log_dir,
            concurrency=concurrency,
            batch_size=batch_size,
        )
        self.all.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.all:
            if worker.alive():
                worker.proc.kill()
            if not worker._log.closed:
                worker.reap(10)


@contextmanager
def fleet(dsn: str, testbus: ModuleType, log_dir: Path) -> Iterator[Fleet]:
    generated = Path(testbus.__file__).parent.parent
    workers = Fleet(dsn, generated, log_dir)
    try:
        yield workers
    finally:
        workers.close()


# The heartbeat's connection: it has run nothing yet, or only `extend_lease`.
HEARTBEAT = "(query = '' OR query LIKE 'WITH renewed AS (%')"


def connections(dsn: str, *, heartbeat: bool = True) -> dict[str, int]:
    """Open connections per application_name (each worker process has its own).

    Without `heartbeat`, only the consumers' and the listener's: the heartbeat
    connects after its first beat, and notices that PostgreSQL restarted only once it
    has leases to extend.
    """
    where = "" if heartbeat else f" AND NOT {HEARTBEAT}"
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database()" + where + " GROUP BY 1"
        ).fetchall()
    return {name: int(n) for name, n in rows}


def tracebacks(worker: WorkerProcess) -> str | None:
    text = worker.log()
    at = text.find("Traceback")
    if at < 0:
        return None
    return f"--- {worker.name} ---\n" + text[max(0, at - 400) : at + 2500]


def install(dsn: str, name: str) -> ModuleType:
    """A domain of tests/schemas (generated beside testbus), its queue installed."""
    module = importlib.import_module(f"tbpkg.{name}")
    with psycopg.connect(dsn, autocommit=True) as c:
        module.install(c)
    return module


@pytest.fixture
def chaos_domain(dsn: str, testbus: ModuleType) -> ModuleType:
    return install(dsn, "chaos")


@pytest.mark.slow
def test_chaos_kills_and_restarts_lose_nothing_and_duplicate_nothing(
    dsn: str,
    testbus: ModuleType,
    chaos_domain: ModuleType,
    dev_server: DevServer | None,
    tmp_path: Path,
) -> None:
    chaos = chaos_domain
    seed = int(os.environ.get("CBUS_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    duration = float(os.environ.get("CBUS_CHAOS_SECONDS", "40"))
    problems: list[str] = []
    events: list[str] = []
    t0 = time.monotonic()

    def note(event: str) -> None:
        events.append(f"{time.monotonic() - t0:6.1f}s {event}")

    # Sends are durable even with the dev server's synchronous_commit = off: a sent
    # command lost by an immediate restart would be the test's fault, not the bus's.
    send_options = "-c synchronous_commit=on"
    sent: list[uuid.UUID] = []
    with psycopg.connect(dsn, options=send_options) as c:
        sent += [chaos.send_write_row(c, value=i).command_id for i in range(1500)]
    note(f"sent {len(sent)} commands")

    # More commands keep coming during the chaos, so that the workers always have
    # work in hand when they are killed. The lock keeps PostgreSQL restarts out of
    # the middle of a send's transaction.
    server_lock = threading.Lock()
    stop_sending = threading.Event()

    def sender() -> None:
        value = len(sent)
        while not stop_sending.wait(0.4):
            with server_lock:
                try:
                    with psycopg.connect(dsn, options=send_options) as c:
                        batch = [
                            chaos.send_write_row(c, value=value + i).command_id for i in range(20)
                        ]
                except Exception as exc:  # reported below; the sender stops
                    problems.append(f"sender failed: {exc!r}")
                    return
            sent.extend(batch)
            value += len(batch)

    def reconnected(workers: list[WorkerProcess], timeout: float) -> list[str]:
        """Every worker whole: one connection per consumer and the listener's (a
        consumer that died, or a worker that did not reconnect after a restart, shows
        as a missing connection)."""

        def whole() -> bool:
            found = connections(dsn, heartbeat=False)
            return all(found.get(w.name, 0) == w.concurrency + 1 for w in workers)

        try:
            wait_for(whole, timeout=timeout)
        except AssertionError:
            found = connections(dsn, heartbeat=False)
            return [
                f"{w.name} (alive: {w.alive()}) has {found.get(w.name, 0)} connections"
                f" {timeout:.0f} s on, expected {w.concurrency + 1} (consumers + listener)"
                for w in workers
                if found.get(w.name, 0) != w.concurrency + 1
            ]
        return []

    def fresh_worker() -> WorkerProcess:
        # Threads for sync handlers or asyncio tasks for async ones, at random.
        factory = rng.choice(["make_chaos", "make_chaos_async"])
        worker = workers.start(
            f"tests.chaos_handlers:{factory}",
            concurrency=rng.randint(2, 4),
            batch_size=rng.choice([1, 5, 10, 20, 50]),
        )
        note(f"started {worker.name} ({factory}, concurrency {worker.concurrency})")
        return worker

    with fleet(dsn, testbus, tmp_path) as workers:
        live = [fresh_worker() for _ in range(3)]
        sending = threading.Thread(target=sender, name="chaos-sender", daemon=True)
        sending.start()

        restarts = []
        if dev_server is not None:
            restarts = [rng.uniform(0.25, 0.4) * duration, rng.uniform(0.6, 0.75) * duration]
        kills = terms = 0
        deadline = t0 + duration
        while time.monotonic() < deadline:
            time.sleep(min(rng.uniform(0.2, 2.0), max(0.0, deadline - time.monotonic())))
            for i, worker in enumerate(live):
                if not worker.alive():
                    problems.append(
                        f"{worker.name} exited by itself with status {worker.proc.returncode}"
                    )
                    worker.reap(10)
                    live[i] = fresh_worker()
            if restarts and time.monotonic() - t0 >= restarts[0]:
                restarts.pop(0)
                assert dev_server is not None
                with server_lock:
                    note("restarting PostgreSQL (immediate)")
                    dev_server.restart("immediate")
                note("PostgreSQL is back")
                problems.extend(reconnected(live, timeout=15))
                note("every worker reconnected")
                continue
            index = rng.randrange(len(live))
            victim = live[index]
            # SIGTERM only a worker that is running (its signal handlers are set by
            # then); one still starting up dies of it, as any process would.
            if rng.random() < 0.15 and connections(dsn).get(victim.name):
                terms += 1
                rc, took = victim.terminate()
                note(f"SIGTERM {victim.name}: exit status {rc} after {took:.1f}s")
                if rc != 0:
                    problems.append(
                        f"{victim.name} got SIGTERM and exited with status {rc} after"
                        f" {took:.1f}s (None: still running after 30 s)"
                    )
            else:
                kills += 1
                victim.kill()
                note(f"SIGKILL {victim.name}")
            live[index] = fresh_worker()

        stop_sending.set()
        sending.join(30)
        note(f"chaos over: {kills} SIGKILL, {terms} SIGTERM, {len(sent)} commands sent")

        # The survivors drain the queue: what killed workers held comes back after
        # its visibility timeout (5 s).
        def outstanding() -> int:
            with psycopg.connect(dsn, autocommit=True) as c:
                row = c.execute(
                    "SELECT count(*) FROM cbus.command WHERE domain = 'chaos'"
                    " AND status <> 'COMPLETED'"
                ).fetchone()
                assert row is not None
                return int(row[0]) + queue_depth(c, QUEUE)

        try:
            wait_for(lambda: outstanding() == 0, timeout=60)
            note("drained")
        except AssertionError:
            problems.append(f"not drained 60 s after the chaos: {outstanding()} outstanding")

        problems.extend(reconnected(live, timeout=15))

        for worker in live:
            rc, took = worker.terminate()
            note(f"SIGTERM {worker.name} (survivor): exit status {rc} after {took:.1f}s")
            if rc != 0:
                problems.append(f"survivor {worker.name} exited with {rc} after SIGTERM")
        for worker in workers.all:
            if found_tb := tracebacks(worker):
                problems.append(f"traceback in the log of {worker.name}:\n{found_tb}")

    # The verdict.
    with psycopg.connect(dsn, autocommit=True) as c:
        by_status = dict(
            c.execute(
                "SELECT status, count(*) FROM cbus.command WHERE domain = 'chaos' GROUP BY 1"
            ).fetchall()
        )
        records = dict(
            c.execute(
                "SELECT command_id, status FROM cbus.command WHERE domain = 'chaos'"
            ).fetchall()
        )
        written = dict(c.execute("SELECT command_id, count(*) FROM effects GROUP BY 1").fetchall())
        depth, archived = queue_depth(c, QUEUE), archive_depth(c, QUEUE)
        reads = c.execute(
            "SELECT max(attempts), count(*) FILTER (WHERE attempts > 1) FROM cbus.command"
            " WHERE domain = 'chaos'"
        ).fetchone()
        assert reads is not None
        most_reads, redelivered = reads

    sent_ids = set(sent)
    assert len(sent_ids) == len(sent)
    not_completed = {i: records.get(i) for i in sent_ids if records.get(i) != "COMPLETED"}
    duplicated = {i: n for i, n in written.items() if i in sent_ids and n != 1}
    unwritten = [i for i in sent_ids if i not in written]
    extra = [i for i in written if i not in sent_ids]
    summary = (
        f"seed {seed} ({duration:.0f} s of chaos): {len(sent)} sent, statuses {by_status},"
        f" queue {depth}, archive {archived}; {redelivered} delivered more than once,"
        f" at most {most_reads} times\n" + "\n".join(events)
    )
    if not_completed:
        problems.append(f"{len(not_completed)} not COMPLETED: {list(not_completed.items())[:5]}")
    if unwritten:
        problems.append(f"{len(unwritten)} commands without an effects row: {unwritten[:5]}")
    if duplicated:
        problems.append(f"{len(duplicated)} with duplicate effects: {list(duplicated.items())[:5]}")
    if extra:
        problems.append(f"{len(extra)} effects rows for commands never sent: {extra[:5]}")
    if depth or archived:
        problems.append(f"queue not empty: {depth} in the queue, {archived} archived")
    print(summary)
    if not redelivered:
        problems.append("no command was delivered twice: the kills never hit work in flight")
    if problems:
        tails = "\n".join(w.tail() for w in workers.all[-4:])
        pytest.fail("\n".join([summary, *problems, tails]), pytrace=False)
    assert by_status == {"COMPLETED": len(sent)}


def test_sigterm_lets_the_command_in_flight_finish_and_exits_0(
    dsn: str, testbus: ModuleType, tmp_path: Path
) -> None:
    # Slow sleeps longer than the domain's visibility timeout (5 s) after the SIGTERM,
    # with a second worker polling beside it: the stopping worker must keep its lease
    # alive until it acknowledges, so the second worker never runs the command.
    seconds = 8.0
    with psycopg.connect(dsn) as c:
        slow = testbus.send_slow(c, seconds=seconds).command_id

    def status(command_id: uuid.UUID) -> tuple[str, int] | None:
        with psycopg.connect(dsn) as c:
            record = cbus.get_command(c, "testbus", command_id)
        return None if record is None else (record.status, record.attempts)

    factory = "tests.chaos_handlers:make_testbus"
    with fleet(dsn, testbus, tmp_path) as workers:
        first = workers.start(factory, concurrency=2)
        wait_for(lambda: status(slow) == ("IN_PROGRESS", 1))
        taken = time.monotonic()
        second = workers.start(factory, concurrency=2)
        # The second worker is polling once its consumers and listener are connected.
        wait_for(lambda: connections(dsn).get(second.name, 0) >= 3)

        first.term()
        # Sent while the first worker finishes Slow: it must not read any more.
        with psycopg.connect(dsn) as c:
            echo = testbus.send_echo(c, n=1).command_id
        rc, took = first.finish(timeout=30)
        assert rc == 0, first.tail()
        # It finished the handler (the sleep) before it exited, not at once.
        # (IN_PROGRESS shows from the first heartbeat, up to 1/3 of the 2 s visibility
        # timeout after the handler started.)
        assert time.monotonic() - taken >= seconds - 1.5
        assert status(slow) == ("COMPLETED", 1), first.tail() + "\n" + second.tail()
        assert "worker stopped: 1 completed, 0 failed" in first.log(), first.tail()

        # The second worker took what was sent after the SIGTERM, and only that.
        wait_for(lambda: (status(echo) or ("", 0))[0] == "COMPLETED")
        rc, _ = second.terminate(timeout=30)
        assert rc == 0, second.tail()
        assert "worker stopped: 1 completed, 0 failed" in second.log(), second.tail()
        assert took < 30

    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT command_id, count(*) FROM effects GROUP BY 1").fetchall()
    assert rows == [(slow, 1)]


def test_sigterm_stops_a_worker_with_sync_and_async_handlers(
    dsn: str, testbus: ModuleType, tmp_path: Path
) -> None:
    """One SIGTERM stops both halves: the sync half's own handler used to replace it."""
    with fleet(dsn, testbus, tmp_path) as workers:
        mixed = workers.start("tests.chaos_handlers:make_mixed", concurrency=2)
        # Both halves connected: two consumers and a listener each.
        wait_for(lambda: connections(dsn).get(mixed.name, 0) >= 6)
        mixed.term()
        rc, took = mixed.finish(timeout=20)
        assert rc == 0, mixed.tail()
        assert took < 10, (took, mixed.tail())


def test_heartbeat_keeps_the_lease_when_its_connection_drops(
    dsn: str, testbus: ModuleType, tmp_path: Path
) -> None:
    # `leases` has a visibility timeout of 2 s, so the heartbeat beats every 2/3 s.
    # Its connection is dropped (as by a PostgreSQL restart, a failover or a proxy)
    # while a 5 s handler runs: the next extension must still come in time, or the
    # second worker runs the command while the first is still running it.
    leases = install(dsn, "leases")
    factory = "tests.chaos_handlers:make_leases"
    with fleet(dsn, testbus, tmp_path) as workers:
        first = workers.start(factory, concurrency=1)
        second = workers.start(factory, concurrency=1)
        wait_for(lambda: all(connections(dsn).get(w.name, 0) >= 2 for w in (first, second)))
        with psycopg.connect(dsn) as c:
            held = leases.send_hold(c, seconds=5.0).command_id

        def heartbeat_pids() -> list[int]:
            with psycopg.connect(dsn, autocommit=True) as c:
                rows = c.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'WITH renewed AS (%%'"
                ).fetchall()
            return [pid for (pid,) in rows]

        # The holder's heartbeat has extended the lease once: drop its connection.
        wait_for(lambda: bool(heartbeat_pids()), timeout=10)
        with psycopg.connect(dsn, autocommit=True) as c:
            for pid in heartbeat_pids():
                c.execute("SELECT pg_terminate_backend(%s)", (pid,))

        def record() -> tuple[str, int] | None:
            with psycopg.connect(dsn) as c:
                r = cbus.get_command(c, "leases", held)
            return None if r is None else (r.status, r.attempts)

        wait_for(lambda: (record() or ("", 0))[0] == "COMPLETED", timeout=30)
        logs = first.tail() + "\n" + second.tail()
        assert record() == ("COMPLETED", 1), logs
        for worker in (first, second):
            rc, _ = worker.terminate()
            assert rc == 0, worker.tail()
        assert "lease lost" not in first.log() + second.log(), logs

    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT command_id, value FROM effects").fetchall()
    assert rows == [(held, 1)]
