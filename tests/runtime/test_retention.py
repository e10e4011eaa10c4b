"""Retention (contract section 9): what the pruner deletes, what it never touches,
one pruner per database, `cbus db prune`, and the worker's background pass."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus._pruner import prune
from cbus._retention import PRUNE_LOCK_KEY
from cbus._worker import SyncWorker
from cbus.cli import main
from click.testing import CliRunner

from .test_roles import roles  # noqa: F401  (the fixture)

SCHEMA = """cbus: 1
domain: keep
options:
  retention: {completed: 1h, failed: 2h, canceled: 3h, audit: 4h, archive: 5h}
commands:
  Short:
    options: {retention: {completed: 10m}}
  Plain: {}
"""

H = 3600


@pytest.fixture(scope="module")
def keep(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    root = tmp_path_factory.mktemp("keep")
    (root / "schemas").mkdir()
    (root / "schemas" / "keep.yaml").write_text(SCHEMA)
    cbgen = Path(sys.executable).with_name("cbgen")
    subprocess.run(
        [str(cbgen), "generate", "schemas", "--out", "out", "--package", "keeppkg"],
        check=True,
        cwd=root,
    )
    sys.path.insert(0, str(root / "out"))
    return importlib.import_module("keeppkg.keep")


@pytest.fixture
def db(dsn: str, keep: ModuleType) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a database with the `keep` domain installed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cbus.install_domain(conn, keep.DOMAIN)
        yield conn


def seed(
    conn: psycopg.Connection[Any],
    kind: str,
    status: str,
    ended_ago: float | None,
    created_ago: float | None = None,
) -> uuid.UUID:
    """A command-log row of `keep`, ended `ended_ago` seconds ago (None: not ended)."""
    command_id = uuid.uuid4()
    created = created_ago if created_ago is not None else (ended_ago or 0) + 60
    conn.execute(
        "INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,"
        " correlation_id, created_at, finished_at) VALUES ('keep', %s, %s, 1, %s, 5, %s,"
        " now() - make_interval(secs => %s), now() - make_interval(secs => %s))",
        (command_id, f"keep.{kind}", status, command_id, created, ended_ago),
    )
    return command_id


def audit(conn: psycopg.Connection[Any], command_id: uuid.UUID, ago: float) -> None:
    conn.execute(
        "INSERT INTO cbus.audit (domain, command_id, event, at)"
        " VALUES ('keep', %s, 'x', now() - make_interval(secs => %s))",
        (command_id, ago),
    )


def archive(conn: psycopg.Connection[Any], command_id: uuid.UUID, kind: str, ago: float) -> None:
    conn.execute(
        "INSERT INTO pgmq.a_keep__commands (msg_id, read_ct, enqueued_at, archived_at, vt,"
        " message, headers) VALUES (nextval('pgmq.q_keep__commands_msg_id_seq'), 1, now(),"
        " now() - make_interval(secs => %s), now(), '{}', jsonb_build_object("
        "'kind', %s::text, 'version', 1, 'command_id', %s::text, 'correlation_id', %s::text))",
        (ago, f"keep.{kind}", str(command_id), str(command_id)),
    )


def remaining(conn: psycopg.Connection[Any]) -> tuple[set[Any], set[Any], set[Any]]:
    commands = {
        r[0] for r in conn.execute("SELECT command_id FROM cbus.command WHERE domain = 'keep'")
    }
    audits = {
        (r[0], round(r[1] / 60))
        for r in conn.execute(
            "SELECT command_id, extract(epoch FROM now() - at) FROM cbus.audit"
            " WHERE domain = 'keep'"
        )
    }
    archived = {
        uuid.UUID(r[0])
        for r in conn.execute("SELECT headers->>'command_id' FROM pgmq.a_keep__commands")
    }
    return commands, audits, archived


class Scene:
    """One of each case: due and not due per status and override, and the never-pruned."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.short_due = seed(conn, "Short", "COMPLETED", 20 * 60)
        self.short_kept = seed(conn, "Short", "COMPLETED", 5 * 60)
        self.plain_kept = seed(conn, "Plain", "COMPLETED", 20 * 60)
        self.plain_due = seed(conn, "Plain", "COMPLETED", 2 * H)
        self.failed_kept = seed(conn, "Plain", "FAILED", 1.5 * H)
        self.failed_due = seed(conn, "Plain", "FAILED", 3 * H)
        self.canceled_kept = seed(conn, "Plain", "CANCELED", 2.5 * H)
        self.canceled_due = seed(conn, "Plain", "CANCELED", 4 * H)
        # Never pruned, however old: pending, in progress, troubleshooting.
        self.pending = seed(conn, "Plain", "PENDING", None, created_ago=100 * 24 * H)
        self.running = seed(conn, "Plain", "IN_PROGRESS", None, created_ago=100 * 24 * H)
        self.tsq = seed(conn, "Plain", "IN_TROUBLESHOOTING_QUEUE", None, created_ago=100 * 24 * H)
        # Audit: 4h, from when each row was written; a pruned command's rows too.
        # Written oldest first, as ids follow time (the pruner's walk ends where
        # every row is too new).
        self.gone = uuid.uuid4()  # a command pruned long ago
        audit(conn, self.tsq, 100 * 24 * H)  # kept: in the troubleshooting queue
        audit(conn, self.pending, 100 * 24 * H)  # kept: pending
        audit(conn, self.plain_due, 5 * H)  # due
        audit(conn, self.failed_kept, 5 * H)  # due: its command ended
        audit(conn, self.gone, 5 * H)  # due
        audit(conn, self.plain_due, 1 * H)  # kept, though its command goes
        # Archive: 5h from archived_at.
        archive(conn, self.tsq, "Plain", 100 * 24 * H)  # kept: in the troubleshooting queue
        archive(conn, self.canceled_due, "Plain", 6 * H)  # due
        archive(conn, self.canceled_kept, "Plain", 1 * H)  # kept
        archive(conn, self.gone, "Plain", 6 * H)  # due

    def kept(self) -> tuple[set[Any], set[Any], set[Any]]:
        return (
            {
                self.short_kept,
                self.plain_kept,
                self.failed_kept,
                self.canceled_kept,
                self.pending,
                self.running,
                self.tsq,
            },
            {(self.plain_due, 60), (self.tsq, 100 * 24 * 60), (self.pending, 100 * 24 * 60)},
            {self.tsq, self.canceled_kept},
        )


DUE = {"completed": 2, "failed": 1, "canceled": 1, "audit": 3, "archive": 2}


def test_install_records_the_retention_in_effect(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        "SELECT kind, completed, failed, canceled, audit, archive FROM cbus.retention"
        " WHERE domain = 'keep' ORDER BY kind"
    ).fetchall()
    assert rows == [
        ("", H, 2 * H, 3 * H, 4 * H, 5 * H),
        ("keep.Plain", H, 2 * H, 3 * H, 4 * H, 5 * H),
        ("keep.Short", 600, 2 * H, 3 * H, 4 * H, 5 * H),  # the command's key overrides
    ]


@pytest.mark.parametrize("batch", [1000, 2])
def test_prune_honours_retention_per_status_and_kind(
    db: psycopg.Connection[Any], batch: int
) -> None:
    scene = Scene(db)
    before = remaining(db)
    dry = prune(db, domains=["keep"], dry_run=True, batch=batch)
    assert dry is not None and [(p.domain, p.counts) for p in dry] == [("keep", DUE)]
    assert remaining(db) == before  # a dry run deletes nothing
    done = prune(db, domains=["keep"], batch=batch)
    assert done is not None and [(p.domain, p.counts) for p in done] == [("keep", DUE)]
    assert remaining(db) == scene.kept()
    again = prune(db, domains=["keep"], batch=batch)
    assert again is not None and again[0].total == 0


def test_every_domain_by_default(db: psycopg.Connection[Any]) -> None:
    Scene(db)
    done = prune(db)
    assert done is not None
    by_domain = {p.domain: p.counts for p in done}
    assert by_domain["keep"] == DUE
    assert "testbus" in by_domain and by_domain["testbus"]["completed"] == 0  # defaults


def test_one_pruner_per_database(dsn: str, db: psycopg.Connection[Any]) -> None:
    Scene(db)
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (PRUNE_LOCK_KEY,))
        assert prune(db, domains=["keep"]) is None  # another holds it: nothing done
        assert len(remaining(db)[0]) == 11
        other.execute("SELECT pg_advisory_unlock(%s)", (PRUNE_LOCK_KEY,))
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            barrier.wait()
            results.append(prune(conn, domains=["keep"], batch=1))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    removed = [r[0].counts for r in results if r is not None]
    # One did the work; the other found the lock taken, or ran after it with nothing left.
    assert sorted(map(str, removed)) in (
        [str(DUE)],
        sorted([str(DUE), str(dict.fromkeys(DUE, 0))]),
    )


def cli(dsn: str, *args: str) -> Any:
    return CliRunner(env={"CBUS_DSN": dsn}).invoke(main, list(args), catch_exceptions=False)


def test_cbus_db_prune(dsn: str, db: psycopg.Connection[Any]) -> None:
    scene = Scene(db)
    result = cli(dsn, "db", "prune", "--domain", "keep", "--dry-run")
    assert (result.exit_code, result.stdout.splitlines()) == (
        0,
        [f"keep {what}: {n} would be removed" for what, n in DUE.items()],
    )
    result = cli(dsn, "db", "prune", "--domain", "keep")
    assert (result.exit_code, result.stdout.splitlines()) == (
        0,
        [f"keep {what}: {n} removed" for what, n in DUE.items()],
    )
    assert remaining(db) == scene.kept()
    result = cli(dsn, "db", "prune")
    assert result.exit_code == 0
    assert "keep completed: 0 removed" in result.stdout.splitlines()


def test_cbus_db_prune_unknown_domain(dsn: str, db: psycopg.Connection[Any]) -> None:
    result = cli(dsn, "db", "prune", "--domain", "nope")
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: Unknown domain `nope`: ") and "keep" in line


def test_the_worker_prunes_in_the_background(
    dsn: str, db: psycopg.Connection[Any], keep: ModuleType
) -> None:
    scene = Scene(db)

    class Keep(keep.KeepHandlers):  # type: ignore[misc,name-defined]
        def short(self, cmd: Any, ctx: Any) -> None:
            pass

        def plain(self, cmd: Any, ctx: Any) -> None:
            pass

    worker = SyncWorker(dsn, [Keep()], concurrency=1, poll_interval=0.1)
    worker.prune_interval = 0.2
    worker.handles_signals = False
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while remaining(db) != scene.kept() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert remaining(db) == scene.kept()
        # And again, a pass later: what fell due since goes too.
        due = seed(db, "Short", "COMPLETED", 30 * 60)
        while due in remaining(db)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert due not in remaining(db)[0]
    finally:
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()


def test_a_worker_role_that_may_not_delete_says_so_once(
    roles: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cbus._acompat import Event
    from cbus._pruner import prune_in_background

    caplog.set_level("WARNING", logger="cbus.worker")
    started = time.monotonic()
    # Returns (stops pruning) instead of failing at every pass.
    prune_in_background(roles.dsn(roles.worker), {}, Event(), interval=0.05)
    assert time.monotonic() - started < 10
    (record,) = [r for r in caplog.records if getattr(r, "action", "") == "prune_not_allowed"]
    assert "cbus db prune" in record.getMessage()


def test_cbus_db_prune_without_cbus_is_one_line(empty_db: str) -> None:
    result = cli(empty_db, "db", "prune")
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert "cbus db install" in line
