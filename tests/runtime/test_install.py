"""cbus.install: idempotent, safe from several sessions at once, and honest about old PGMQ."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import cbus
import psycopg
import pytest
from cbus.install import SCHEMA_VERSION


def _objects(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        "        WHERE n.nspname = 'pgmq'),"
        "       (SELECT count(*) FROM pg_tables WHERE schemaname = 'cbus')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_install_twice_changes_nothing_the_second_time(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        cbus.install(conn)
        first = _objects(conn)
        cbus.install(conn)
        assert _objects(conn) == first
        # PGMQ functions; cbus tables: command, audit, batch, troubleshooting,
        # schema_version, command_type, rate_bucket, schedule, retention
        assert first[0] > 50 and first[1] == 9


def test_concurrent_installs_all_succeed(empty_db: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def install() -> None:
        try:
            with psycopg.connect(empty_db, autocommit=True) as conn:
                barrier.wait()
                cbus.install(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regprocedure('pgmq.send(text, jsonb, jsonb, integer)')")


def test_domain_install_is_idempotent(empty_db: str, testbus: Any) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        cbus.install(conn)
        testbus.install(conn)
        testbus.install(conn)
        row = conn.execute(
            "SELECT count(*) FROM pgmq.meta WHERE queue_name = 'testbus__commands'"
        ).fetchone()
        assert row == (1,)
        # Each command's JSON schemas, for tools without the generated package.
        types = conn.execute(
            "SELECT kind, version, payload_schema, result_schema FROM cbus.command_type"
            " WHERE domain = 'testbus' ORDER BY kind"
        ).fetchall()
        assert [kind for kind, *_ in types] == sorted(s.kind for s in testbus.DOMAIN.commands)
        echo = next(t for t in types if t[0] == "testbus.Echo")
        assert echo[2]["$defs"]["Echo"]["required"] == ["n"]
        assert echo[3]["$defs"]["EchoResult"]["required"] == ["n", "text"]
        write_row = next(t for t in types if t[0] == "testbus.WriteRow")
        assert write_row[3] is None


def test_pgmq_without_headers_is_refused(empty_db: str) -> None:
    # A schema as PGMQ before 1.5 left it: send(queue, msg) but no headers variant.
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA pgmq; CREATE FUNCTION pgmq.send(queue_name text, msg jsonb)"
            " RETURNS SETOF bigint LANGUAGE sql AS 'SELECT 1::bigint'"
        )
        with pytest.raises(cbus.InstallError) as info:
            cbus.install(conn)
        assert str(info.value) == (
            "The pgmq schema on this server is a PGMQ older than 1.4, installed as plain SQL "
            "(pgmq.send takes no headers); cbus needs PGMQ 1.5 or newer: upgrade it, or drop "
            "the pgmq schema and run `cbus db install` again"
        )
        assert conn.execute("SELECT to_regnamespace('cbus')").fetchone() == (None,)


def test_pgmq_1_4_installed_as_sql_is_refused_naming_both_versions(empty_db: str) -> None:
    script = (Path(__file__).parent / "data" / "pgmq-1.4.5.sql").read_text()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(b"CREATE SCHEMA pgmq;\n" + script.encode())
        with pytest.raises(cbus.InstallError) as info:
            cbus.install(conn)
        assert str(info.value).startswith(
            "The pgmq schema on this server is PGMQ 1.4, installed as plain SQL "
            "(pgmq.send takes no headers); cbus needs PGMQ 1.5 or newer"
        )
        assert conn.execute("SELECT to_regnamespace('cbus')").fetchone() == (None,)


def test_a_pgmq_package_without_sql_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_module = sys.modules["cbus.install"]

    (tmp_path / "sql").mkdir()  # pgmq 1.1.1 and 1.1.2 ship the package without its SQL
    monkeypatch.setattr(install_module, "files", lambda package: tmp_path)
    with pytest.raises(cbus.InstallError) as info:
        install_module._pgmq_sql()
    assert "the installed `pgmq` package carries no PGMQ SQL" in str(info.value)
    assert "pip install 'pgmq>=1.1.3'" in str(info.value)


def test_old_pgmq_extension_is_refused_naming_both_versions() -> None:
    from cbus.install import _plan

    with pytest.raises(cbus.InstallError) as info:
        _plan(("1.4.5", "1.4.5", True, False, True))
    assert str(info.value) == (
        "PGMQ 1.4.5 is installed, but cbus needs PGMQ 1.5 or newer (message headers): "
        "run ALTER EXTENSION pgmq UPDATE"
    )
    assert _plan(("1.13.0", "1.13.0", True, True, True)) is None
    assert _plan((None, "1.13.0", False, False, False)) == "CREATE EXTENSION IF NOT EXISTS pgmq"
    assert _plan((None, None, False, False, False)) == "sql"


def test_worker_refuses_a_database_without_cbus(empty_db: str, testbus: Any) -> None:
    worker = cbus.Worker(empty_db, [testbus.TestbusHandlers()], concurrency=1)
    with pytest.raises(cbus.InstallError, match="cbus is not installed in this database"):
        worker.run(until_idle=True)


def test_worker_refuses_a_schema_older_than_it_needs(dsn: str, testbus: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM cbus.schema_version WHERE version >= 2")
    worker = cbus.Worker(dsn, [testbus.TestbusHandlers()], concurrency=1)
    with pytest.raises(
        cbus.InstallError, match=f"version 1; this cbus needs version {SCHEMA_VERSION}"
    ):
        worker.run(until_idle=True)
    # Installing again brings the schema up to date, and the worker starts.
    with psycopg.connect(dsn, autocommit=True) as conn:
        cbus.install(conn)
    cbus.Worker(dsn, [testbus.TestbusHandlers()], concurrency=1).run(until_idle=True)


def test_worker_refuses_a_domain_whose_queue_is_missing(dsn: str, testbus: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgmq.drop_queue('testbus__commands')")
    worker = cbus.Worker(dsn, [testbus.TestbusHandlers()], concurrency=1)
    with pytest.raises(cbus.InstallError) as info:
        worker.run(until_idle=True)
    assert str(info.value) == (
        "No PGMQ queue for domain testbus: run `cbus db install --domains tbpkg` "
        "(or each domain's generated `install(conn)`) first"
    )


def test_worker_refuses_a_database_that_does_not_exist(server_dsn: str, testbus: Any) -> None:
    missing = psycopg.conninfo.make_conninfo(server_dsn, dbname="cbus_no_such_database")
    worker = cbus.Worker(missing, [testbus.TestbusHandlers()], concurrency=1)
    with pytest.raises(cbus.InstallError, match='database "cbus_no_such_database" does not exist'):
        worker.run(until_idle=True)


def test_worker_sessions_are_named_unless_the_user_named_them(dsn: str, testbus: Any) -> None:
    from cbus._worker_dsn import with_application_name

    assert "application_name='cbus worker'" in with_application_name(dsn, {})
    named = psycopg.conninfo.make_conninfo(dsn, application_name="billing")
    assert with_application_name(named, {}) == named
    assert with_application_name(dsn, {"application_name": "x"}) == dsn
    service = psycopg.conninfo.make_conninfo(dsn, service="billing")
    assert with_application_name(service, {}) == service


def test_handlers_see_the_users_own_connection_options(
    dsn: str, testbus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumers' statement timeout must not replace the user's search_path."""
    monkeypatch.setenv("PGOPTIONS", "-c search_path=custom,public")
    seen: list[tuple[str, str]] = []

    class Probe(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            row = ctx.conn.execute(
                "SELECT current_setting('search_path'), current_setting('statement_timeout')"
            ).fetchone()
            seen.append(row)
            return testbus.EchoResult(n=cmd.n, text="")

    with psycopg.connect(dsn) as conn:
        testbus.send_echo(conn, n=1)
    cbus.Worker(dsn, [Probe()], concurrency=1).run(until_idle=True)
    assert seen and seen[0][0] == "custom,public", seen
    assert seen[0][1] != "0", seen


def test_worker_from_a_pool_connects_with_the_pools_kwargs(dsn: str, testbus: Any) -> None:
    """A pool may carry the dbname (or a password) in kwargs, not in its conninfo."""
    from psycopg_pool import ConnectionPool

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    dbname = params.pop("dbname")
    pool = ConnectionPool(
        psycopg.conninfo.make_conninfo("", **params),
        kwargs={"dbname": dbname, "autocommit": False},
        open=False,
    )
    with psycopg.connect(dsn) as conn:
        testbus.send_echo(conn, n=1)
    cbus.Worker(pool, [testbus.TestbusHandlers()], concurrency=1).run(until_idle=True)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgmq.q_testbus__commands").fetchone() == (0,)


@pytest.mark.parametrize(
    ("option", "value"),
    [("concurrency", 0), ("concurrency", -1), ("batch_size", 0), ("poll_interval", 0.0)],
)
def test_worker_refuses_options_that_cannot_work(
    dsn: str, testbus: Any, option: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=option):
        cbus.Worker(dsn, [testbus.TestbusHandlers()], **{option: value})


@pytest.mark.parametrize("missing", ["chaos", "testbus"])
def test_a_mixed_worker_starts_neither_half_when_one_cannot_start(
    dsn: str, testbus: Any, missing: str
) -> None:
    """Sync handlers for one domain, async for another, one domain's queue missing."""
    import sys

    chaos = sys.modules[testbus.__name__.rpartition(".")[0] + ".chaos"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        testbus.send_echo(conn, n=1)
        conn.execute("SELECT pgmq.drop_queue(%s)", (f"{missing}__commands",))
    if missing == "chaos":
        handlers = [testbus.TestbusHandlers(), chaos.ChaosAsyncHandlers()]
    else:
        handlers = [chaos.ChaosHandlers(), testbus.TestbusAsyncHandlers()]
    worker = cbus.Worker(dsn, handlers, concurrency=1)
    with pytest.raises(cbus.InstallError, match=f"No PGMQ queue for domain {missing}"):
        worker.run(until_idle=True)
    assert worker.completed + worker.failed == 0
    if missing == "chaos":  # the other domain's command was left alone
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT read_ct FROM pgmq.q_testbus__commands").fetchall() == [(0,)]
