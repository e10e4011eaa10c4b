"""`cbus db roles`: a producer, a worker and an operator, run AS those roles.

Each role is created by the command a DBA runs, and the tests connect as it with
`options=-c role=NAME` (the embedded server's test user is a superuser; SET ROLE
drops its rights). Each role does its job and is refused what it must not do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus.errors import InstallError
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .helpers import drain
from .test_cli import cbus_cli
from .test_troubleshooting import make_handlers

QUEUE = "testbus__commands"
OTHER = "orders__commands"


class Roles:
    def __init__(self, dsn: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.producer, self.worker, self.operator = (
            f"cbus_{kind}_{tag}" for kind in ("producer", "worker", "operator")
        )
        self.reply_queue = f"replies_{tag}"
        self._dsn = dsn

    def dsn(self, role: str) -> str:
        return make_conninfo(self._dsn, options=f"-c role={role}")

    def connect(self, role: str, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(role), **kwargs)


def _drop(conn: psycopg.Connection[Any], *names: str) -> None:
    idents = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    conn.execute(sql.SQL("DROP OWNED BY {}").format(idents))
    conn.execute(sql.SQL("DROP ROLE {}").format(idents))


@pytest.fixture
def roles(dsn: str, testbus: ModuleType) -> Iterator[Roles]:
    """The three roles of the `testbus` domain, made by `cbus db roles`."""
    r = Roles(dsn)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pgmq.create(%s)", (r.reply_queue,))
        result = cbus_cli(
            dsn,
            "db",
            "roles",
            "--domains",
            "tbpkg.testbus",
            "--producer",
            r.producer,
            "--worker",
            r.worker,
            "--operator",
            r.operator,
            "--reply-queue",
            r.reply_queue,
        )
        assert result.exit_code == 0, result.output
        try:
            yield r
        finally:
            _drop(admin, r.producer, r.worker, r.operator)


def _status(dsn: str, domain: str, command_id: uuid.UUID) -> str | None:
    with psycopg.connect(dsn) as c:
        record = cbus.get_command(c, domain, command_id)
        return None if record is None else record.status


# -- the command -----------------------------------------------------------------


def test_roles_prints_its_grants_and_runs_again(dsn: str, testbus: ModuleType) -> None:
    r = Roles(dsn)
    with psycopg.connect(dsn, autocommit=True) as admin:
        try:
            first = cbus_cli(dsn, "db", "roles", "--domains", "tbpkg", "--worker", r.worker)
            assert first.exit_code == 0, first.output
            assert f'CREATE ROLE "{r.worker}" NOLOGIN' in first.stdout
            assert f'GRANT SELECT, UPDATE, DELETE ON TABLE "pgmq"."q_{QUEUE}"' in first.stdout
            assert f"-- {r.worker} may consume in domain testbus" in first.stdout
            assert OTHER not in first.stdout  # the package's domains only
            again = cbus_cli(dsn, "db", "roles", "--domains", "tbpkg", "--worker", r.worker)
            assert again.exit_code == 0, again.output
            assert "CREATE ROLE" not in again.stdout
            row = admin.execute(
                "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (r.worker,)
            ).fetchone()
            assert row == (False, False)
            dry = cbus_cli(
                dsn, "db", "roles", "--domains", "tbpkg", "--producer", r.producer, "--dry-run"
            )
            assert dry.exit_code == 0, dry.output
            assert f'CREATE ROLE "{r.producer}" NOLOGIN' in dry.stdout
            gone = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (r.producer,))
            assert gone.fetchone() is None
            login = cbus_cli(
                dsn, "db", "roles", "--domains", "tbpkg", "--operator", r.operator, "--login"
            )
            assert f'CREATE ROLE "{r.operator}" LOGIN' in login.stdout
            assert "\\password" in login.stdout
        finally:
            for name in (r.worker, r.operator):
                if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                    _drop(admin, name)


def test_roles_usage_errors_are_one_line(dsn: str) -> None:
    result = cbus_cli(dsn, "db", "roles", "--domains", "tbpkg")
    assert result.exit_code == 2
    assert "name at least one role" in result.output
    result = cbus_cli(dsn, "db", "roles", "--domains", "no_such_pkg", "--worker", "w")
    assert result.exit_code == 2
    assert "cannot import `no_such_pkg`" in result.output
    result = cbus_cli(dsn, "db", "roles", "--domains", "tbpkg", "--worker", "pg_w")
    assert result.exit_code == 2
    assert "Invalid role name" in result.output


def test_roles_needs_cbus_installed(empty_db: str, testbus: ModuleType) -> None:
    result = cbus_cli(empty_db, "db", "roles", "--domains", "tbpkg", "--worker", "cbus_w_none")
    assert result.exit_code == 1
    assert "run `cbus db install --domains tbpkg` first" in result.output
    assert len(result.output.splitlines()) == 1


def test_roles_needs_the_owner(dsn: str, roles: Roles) -> None:
    """Run by a role that does not own cbus's tables: one line saying who should."""
    result = cbus_cli(
        roles.dsn(roles.worker), "db", "roles", "--domains", "tbpkg", "--worker", roles.worker
    )
    assert result.exit_code == 1
    assert "run `cbus db roles` as the role that installed cbus" in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


# -- the producer ----------------------------------------------------------------


def test_producer_sends_to_its_domains_only(
    roles: Roles, testbus: ModuleType, shop_orders: ModuleType
) -> None:
    with roles.connect(roles.producer) as conn:
        sent = testbus.send_echo(conn, n=1)
        conn.commit()
        many = cbus.send_many(conn, [testbus.Echo(n=2), testbus.Echo(n=3)], batch_id=uuid.uuid4())
        conn.commit()
        assert cbus.get_command(conn, "testbus", sent.command_id) is not None
        conn.commit()
        assert len(many) == 2

        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            shop_orders.send_cancel_order(conn, order_id=uuid.uuid4())
        conn.rollback()
        # A log row that claims an outcome, in its own domain or another one.
        for domain, status in (("testbus", "COMPLETED"), ("orders", "PENDING")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(
                    "INSERT INTO cbus.command (domain, command_id, kind, version, status,"
                    " max_attempts, correlation_id) VALUES (%s, %s, 'x', 1, %s, 1, %s)",
                    (domain, uuid.uuid4(), status, uuid.uuid4()),
                )
            conn.rollback()
        refused = [
            sql.SQL("INSERT INTO {} (message) VALUES ('{{}}')").format(
                sql.Identifier("pgmq", "q_" + OTHER)
            ),
            sql.SQL("UPDATE cbus.command SET status = 'COMPLETED'"),
            # send_many draws the msg_ids in its INSERT: no UPDATE, no headers read.
            sql.SQL("UPDATE cbus.command SET msg_id = NULL WHERE msg_id IS NULL"),
            sql.SQL("SELECT headers FROM {}").format(sql.Identifier("pgmq", "q_" + QUEUE)),
            sql.SQL("DELETE FROM {}").format(sql.Identifier("pgmq", "q_" + QUEUE)),
            sql.SQL("SELECT message FROM {}").format(sql.Identifier("pgmq", "q_" + QUEUE)),
            sql.SQL(
                "INSERT INTO cbus.audit (domain, command_id, event) VALUES ('x', {}, 'x')"
            ).format(sql.Literal(uuid.uuid4())),
        ]
        for stmt in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
            conn.rollback()


# -- the worker ------------------------------------------------------------------


def test_worker_drains_retries_sets_aside_and_replies(
    dsn: str, roles: Roles, testbus: ModuleType
) -> None:
    with roles.connect(roles.producer) as conn:
        done = testbus.send_echo(conn, n=7, reply_to=roles.reply_queue)
        flaky = testbus.send_flaky(conn, succeed_on=2)
        conn.commit()
    handlers = make_handlers(testbus)
    handlers.seen.add(7)  # Echo 7 completes; Echo 8 below is set aside
    with roles.connect(roles.producer) as conn:
        poison = testbus.send_echo(conn, n=8)
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as admin:
        cbus.install(admin)  # an upgrade runs schema.sql again: the roles still work
    worker = drain(roles.dsn(roles.worker), [handlers])
    assert worker.completed == 2
    assert _status(dsn, "testbus", done.command_id) == "COMPLETED"
    assert _status(dsn, "testbus", flaky.command_id) == "COMPLETED"
    assert _status(dsn, "testbus", poison.command_id) == "IN_TROUBLESHOOTING_QUEUE"
    with roles.connect(roles.producer, autocommit=True) as conn:
        replies = conn.execute("SELECT * FROM pgmq.read(%s, 30, 10)", (roles.reply_queue,))
        assert len(replies.fetchall()) == 1


def test_worker_is_refused_other_domains(
    roles: Roles, testbus: ModuleType, shop_orders: ModuleType, dsn: str
) -> None:
    with psycopg.connect(dsn) as admin:
        order = shop_orders.send_cancel_order(admin, order_id=uuid.uuid4())
        admin.commit()
    with roles.connect(roles.worker) as conn:
        hidden = conn.execute(
            "UPDATE cbus.command SET status = 'COMPLETED' WHERE domain = 'orders'"
        )
        assert hidden.rowcount == 0
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO cbus.audit (domain, command_id, event) VALUES ('orders', %s, 'x')",
                (order.command_id,),
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier("pgmq", "q_" + OTHER)))
    assert _status(dsn, "orders", order.command_id) == "PENDING"

    class Orders(shop_orders.OrdersHandlers):  # type: ignore[misc, name-defined]
        def cancel_order(self, cmd: Any, ctx: cbus.Context) -> None:
            pass

    with pytest.raises(InstallError) as refused:
        cbus.Worker(roles.dsn(roles.worker), [Orders()]).run(until_idle=True)
    message = str(refused.value)
    assert message.startswith(f"Role {roles.worker} lacks ")
    assert f"SELECT on pgmq.q_{OTHER}" in message
    assert "consume rights in domain orders" in message
    assert "\n" not in message and "cbus db roles --domains shop --worker" in message


def test_worker_missing_a_grant_says_which(dsn: str, roles: Roles, testbus: ModuleType) -> None:
    """Without INSERT on the archive nothing could be set aside: refuse to start."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("REVOKE INSERT ON {} FROM {}").format(
                sql.Identifier("pgmq", "a_" + QUEUE), sql.Identifier(roles.worker)
            )
        )
    result = cbus_cli(
        roles.dsn(roles.worker),
        "worker",
        "tests.runtime.test_roles:make_testbus_handlers",
        "--until-idle",
    )
    assert result.exit_code == 1
    # The line before it warns that these test handlers leave commands unhandled.
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Role {roles.worker} lacks INSERT on pgmq.a_{QUEUE}: grant them with "
        f"`cbus db roles --domains tbpkg --worker {roles.worker}`"
    )


def make_testbus_handlers() -> object:
    import tbpkg.testbus  # type: ignore[import-not-found]

    return make_handlers(tbpkg.testbus)


# -- the operator ----------------------------------------------------------------


def test_operator_lists_retries_cancels_and_audits(
    dsn: str, roles: Roles, testbus: ModuleType, shop_orders: ModuleType
) -> None:
    with roles.connect(roles.producer) as conn:
        first, second = testbus.send_echo(conn, n=1), testbus.send_echo(conn, n=2)
        conn.commit()
    handlers = make_handlers(testbus)
    drain(roles.dsn(roles.worker), [handlers])
    with psycopg.connect(dsn) as admin:
        order = shop_orders.send_cancel_order(admin, order_id=uuid.uuid4())
        admin.commit()
    op = roles.dsn(roles.operator)

    listed = cbus_cli(op, "tsq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert str(first.command_id) in listed.stdout and str(second.command_id) in listed.stdout
    shown = cbus_cli(op, "tsq", "show", "testbus", str(first.command_id))
    assert shown.exit_code == 0, shown.output
    assert "in the archive" in shown.stdout

    retried = cbus_cli(op, "tsq", "retry", "testbus", str(first.command_id))
    assert retried.exit_code == 0, retried.output
    canceled = cbus_cli(op, "tsq", "cancel", "testbus", str(second.command_id), "--reason", "x")
    assert canceled.exit_code == 0, canceled.output
    drain(roles.dsn(roles.worker), [handlers])
    with roles.connect(roles.producer) as conn:
        third = testbus.send_echo(conn, n=3)
        conn.commit()
    drain(roles.dsn(roles.worker), [handlers])
    result = '{"n": 3, "text": "by hand"}'
    completed = cbus_cli(
        op, "tsq", "complete", "testbus", str(third.command_id), "--result", result
    )
    assert completed.exit_code == 0, completed.output
    assert _status(dsn, "testbus", third.command_id) == "COMPLETED"
    assert _status(dsn, "testbus", first.command_id) == "COMPLETED"
    assert _status(dsn, "testbus", second.command_id) == "CANCELED"
    audit = cbus_cli(op, "audit", "testbus", str(first.command_id))
    assert audit.exit_code == 0, audit.output
    assert "retried" in audit.stdout

    # Another domain's commands do not exist for this operator.
    other = cbus_cli(op, "tsq", "cancel", "orders", str(order.command_id), "--reason", "x")
    assert other.exit_code == 3
    assert len(other.output.splitlines()) == 1 and "No command" in other.output
    assert _status(dsn, "orders", order.command_id) == "PENDING"
