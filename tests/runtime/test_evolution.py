"""Schema evolution in the worker (contract section 8, issue 14), on a real PostgreSQL.

One domain, `evo`, generated twice with cbgen, as two deploys of a service:
`evo1` (data/evolution/v1) and `evo2` (data/evolution/v2, where PlaceOrder became
CreateOrder version 2, Note gained a defaulted field, and Ship is new).
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus import _versions

from .helpers import archive_depth, drain, queue_depth, running, wait_for

DATA = Path(__file__).parent / "data" / "evolution"
QUEUE = "evo__commands"


def _generate(out: Path, version: int) -> ModuleType:
    cbgen = Path(sys.executable).with_name("cbgen")
    subprocess.run(
        [
            str(cbgen),
            "generate",
            str(DATA / f"v{version}"),
            "--out",
            str(out),
            "--package",
            f"evo{version}",
        ],
        check=True,
        capture_output=True,
    )
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module(f"evo{version}.evo")


@pytest.fixture(scope="module")
def evo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    out = tmp_path_factory.mktemp("evolution")
    return _generate(out, 1), _generate(out, 2)


@pytest.fixture
def v1(evo: tuple[ModuleType, ModuleType], conn: psycopg.Connection[Any]) -> ModuleType:
    cbus.install_domain(conn, evo[0].DOMAIN)
    return evo[0]


@pytest.fixture
def v2(evo: tuple[ModuleType, ModuleType], v1: ModuleType) -> ModuleType:
    return evo[1]


class Calls:
    """What handlers were given, by command_id, from every worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, uuid.UUID, str]] = []  # (worker, command_id, class)

    def add(self, worker: str, ctx: cbus.Context, command: Any) -> None:
        with self.lock:
            self.seen.append((worker, ctx.command_id, type(command).__qualname__))

    def per_command(self) -> Counter[uuid.UUID]:
        with self.lock:
            return Counter(command_id for _, command_id, _ in self.seen)


def v1_handlers(v1: ModuleType, calls: Calls) -> Any:
    class Old(v1.EvoHandlers):  # type: ignore[misc, name-defined]
        def place_order(self, cmd: Any, ctx: cbus.Context) -> None:
            calls.add("v1", ctx, cmd)

        def note(self, cmd: Any, ctx: cbus.Context) -> None:
            calls.add("v1", ctx, cmd)

    return Old()


def v2_handlers(v2: ModuleType, calls: Calls, *, failing_upgrade: bool = False) -> Any:
    class New(v2.EvoHandlers):  # type: ignore[misc, name-defined]
        def upgrade_create_order_v1(self, old: Any) -> Any:
            if failing_upgrade:
                raise ValueError(f"no customer name in {old.customer!r}")
            return v2.CreateOrder(order_id=old.order_id, customer_name=old.customer)

        def create_order(self, cmd: Any, ctx: cbus.Context) -> None:
            assert type(cmd) is v2.CreateOrder
            calls.add("v2", ctx, cmd)

        def note(self, cmd: Any, ctx: cbus.Context) -> None:
            assert type(cmd) is v2.Note
            calls.add("v2", ctx, cmd)

        def ship(self, cmd: Any, ctx: cbus.Context) -> None:
            calls.add("v2", ctx, cmd)

    return New()


def _send_v1(conn: psycopg.Connection[Any], v1: ModuleType, n: int) -> list[uuid.UUID]:
    ids = [v1.send_place_order(conn, order_id=uuid.uuid4(), customer=f"c{i}") for i in range(n)]
    ids += [v1.send_note(conn, text=f"t{i}") for i in range(n)]
    conn.commit()
    return [s.command_id for s in ids]


def _send_v2(conn: psycopg.Connection[Any], v2: ModuleType, n: int) -> list[uuid.UUID]:
    ids = [
        v2.send_create_order(conn, order_id=uuid.uuid4(), customer_name=f"n{i}") for i in range(n)
    ]
    ids += [v2.send_note(conn, text=f"t{i}") for i in range(n)]
    ids += [v2.send_ship(conn, order_id=uuid.uuid4()) for i in range(n)]
    conn.commit()
    return [s.command_id for s in ids]


def _record(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> cbus.CommandRecord:
    record = cbus.get_command(conn, "evo", command_id)
    assert record is not None
    return record


def test_old_versions_and_alias_kinds_run_as_the_current_command(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    sent = _send_v1(conn, v1, 3)
    calls = Calls()
    drain(dsn, [v2_handlers(v2, calls)])

    assert calls.per_command() == Counter(sent)
    assert {cls for _, _, cls in calls.seen} == {"CreateOrder", "Note"}
    for command_id in sent:
        record = _record(conn, command_id)
        assert (record.status, record.attempts) == ("COMPLETED", 1)
    assert {_record(conn, c).kind for c in sent} == {"evo.PlaceOrder", "evo.Note"}
    assert queue_depth(conn, QUEUE) == 0


def test_an_upgrade_hook_that_raises_sends_the_command_to_troubleshooting(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    order = v1.send_place_order(conn, order_id=uuid.uuid4(), customer="Jane").command_id
    note = v1.send_note(conn, text="t").command_id
    conn.commit()
    calls = Calls()
    drain(dsn, [v2_handlers(v2, calls, failing_upgrade=True)])

    record = _record(conn, order)
    assert (record.status, record.last_error_code, record.attempts) == (
        "IN_TROUBLESHOOTING_QUEUE",
        "UPGRADE_FAILED",
        1,
    )
    assert record.last_error_message == (
        "New.upgrade_create_order_v1 could not upgrade version 1 of `evo.CreateOrder`: "
        "ValueError: no customer name in 'Jane'"
    )
    assert _record(conn, note).status == "COMPLETED"
    assert calls.per_command() == Counter([note])


def test_a_worker_that_lacks_a_hook_it_must_write_refuses_to_start(
    dsn: str, v2: ModuleType
) -> None:
    class Forgot(v2.EvoHandlers):  # type: ignore[misc, name-defined]
        def create_order(self, cmd: Any, ctx: cbus.Context) -> None: ...

    with pytest.raises(ValueError) as caught:
        cbus.Worker(dsn, [Forgot()])
    message = str(caught.value)
    assert message.startswith("EvoHandlers.upgrade_create_order_v1 must be written: version 1 ")
    assert "\n" not in message
    # The mechanical hook (Note) needs nothing; a command it does not handle neither.

    class NoOrders(v2.EvoHandlers):  # type: ignore[misc, name-defined]
        def note(self, cmd: Any, ctx: cbus.Context) -> None: ...

    cbus.Worker(dsn, [NoOrders()])


def test_newer_versions_and_kinds_wait_for_a_newer_worker_without_counting(
    dsn: str,
    conn: psycopg.Connection[Any],
    v1: ModuleType,
    v2: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = _send_v2(conn, v2, 3)  # 3 CreateOrder (unknown to v1), 3 Note v2, 3 Ship
    calls = Calls()
    _versions._logged.clear()
    caplog.set_level(logging.WARNING, "cbus.worker")
    # More reads than max_attempts (5): none is an attempt, none a crash loop.
    for _ in range(7):
        drain(dsn, [v1_handlers(v1, calls)])  # returns: waiting messages are no work
        conn.execute(f"UPDATE pgmq.q_{QUEUE} SET vt = now()")  # due again at once
        conn.commit()

    assert calls.seen == []
    for command_id in sent:
        record = _record(conn, command_id)
        assert (record.status, record.attempts, record.last_error_code) == (
            "PENDING",
            0,
            "WAITING_FOR_NEWER_WORKER",
        )
    assert queue_depth(conn, QUEUE) == 9 and archive_depth(conn, QUEUE) == 0
    row = conn.execute(f"SELECT max(read_ct) FROM pgmq.q_{QUEUE}").fetchone()
    assert row == (0,)
    assert cbus.list_troubleshooting(conn, domain="evo").items == []
    waits = [r for r in caplog.records if getattr(r, "action", None) == "waiting_for_newer_worker"]
    # Once per kind and version per interval (2 s here), not once per message.
    assert Counter((r.kind, r.version) for r in waits) == Counter(  # type: ignore[attr-defined]
        {("evo.CreateOrder", 2): 1, ("evo.Note", 2): 1, ("evo.Ship", 1): 1}
    )

    drain(dsn, [v2_handlers(v2, calls)])
    assert calls.per_command() == Counter(sent)
    for command_id in sent:
        record = _record(conn, command_id)
        assert (record.status, record.attempts, record.last_error_code) == (
            "COMPLETED",
            1,
            None,
        )


def test_after_the_grace_period_a_waiting_message_is_set_aside(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    note = v2.send_note(conn, text="t").command_id
    ship = v2.send_ship(conn, order_id=uuid.uuid4()).command_id
    fresh = v2.send_note(conn, text="fresh").command_id
    conn.execute(
        f"UPDATE pgmq.q_{QUEUE} SET enqueued_at = now() - interval '3601 seconds' "
        "WHERE headers ->> 'command_id' <> %s",
        (str(fresh),),
    )
    conn.commit()
    drain(dsn, [v1_handlers(v1, Calls())])

    record = _record(conn, note)
    assert (record.status, record.last_error_code) == (
        "IN_TROUBLESHOOTING_QUEUE",
        "UNSUPPORTED_VERSION",
    )
    assert record.last_error_message == (
        "Version 2 of `evo.Note` is newer than this worker's 1: no worker that knows it "
        "took it within unknown_version_grace (3600 s)"
    )
    record = _record(conn, ship)
    assert (record.status, record.last_error_code) == ("IN_TROUBLESHOOTING_QUEUE", "UNKNOWN_KIND")
    assert _record(conn, fresh).status == "PENDING"
    assert archive_depth(conn, QUEUE) == 2


def _start(dsn: str, handlers: Any) -> tuple[cbus.Worker, threading.Thread]:
    worker = cbus.Worker(dsn, [handlers], poll_interval=0.05, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def _stop(worker: cbus.Worker, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_a_rolling_deploy_completes_every_command_once(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    """The acceptance test of issue 14: v1 commands, a v2 worker beside the v1 one, v2
    commands from upgraded senders, the v1 worker stopped; every command runs once."""
    calls = Calls()
    sent = _send_v1(conn, v1, 10)
    old = _start(dsn, v1_handlers(v1, calls))
    wait_for(lambda: len(calls.seen) >= 3)
    new = _start(dsn, v2_handlers(v2, calls))
    sent += _send_v1(conn, v1, 5)  # old senders still send
    sent += _send_v2(conn, v2, 10)  # upgraded senders
    time.sleep(1)  # both workers run side by side
    _stop(*old)
    wait_for(lambda: all(_record(conn, c).status == "COMPLETED" for c in sent), 60)
    _stop(*new)

    assert calls.per_command() == Counter(sent)  # every command once
    assert cbus.list_troubleshooting(conn, domain="evo").items == []
    by = Counter(worker for worker, _, _ in calls.seen)
    assert by["v1"] >= 3 and by["v2"] >= 30  # v1 never ran a v2 command
    # The v2 handler is only ever given the current classes (it asserts so, too).
    assert {cls for worker, _, cls in calls.seen if worker == "v2"} <= {
        "CreateOrder",
        "Note",
        "Ship",
    }
    assert queue_depth(conn, QUEUE) == 0 and archive_depth(conn, QUEUE) == 0


def test_a_newer_sender_with_only_old_workers_waits_then_completes(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    calls = Calls()
    options = {"poll_interval": 0.05, "concurrency": 2}
    with running(dsn, [v1_handlers(v1, calls)], **options):
        sent = _send_v2(conn, v2, 5)
        time.sleep(3)  # longer than the visibility_timeout: read again at least once
        for command_id in sent:
            record = _record(conn, command_id)
            assert (record.status, record.last_error_code) == (
                "PENDING",
                "WAITING_FOR_NEWER_WORKER",
            )
        assert calls.seen == []
        assert cbus.list_troubleshooting(conn, domain="evo").items == []
        # The new worker starts beside the old one, inside the grace period.
        with running(dsn, [v2_handlers(v2, calls)], **options):
            wait_for(lambda: all(_record(conn, c).status == "COMPLETED" for c in sent), 30)
    assert calls.per_command() == Counter(sent)
    assert {w for w, _, _ in calls.seen} == {"v2"}
    assert cbus.list_troubleshooting(conn, domain="evo").items == []


def test_an_async_worker_awaits_its_upgrade_hooks(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    seen: list[str] = []

    class New(v2.EvoAsyncHandlers):  # type: ignore[misc, name-defined]
        async def upgrade_create_order_v1(self, old: Any) -> Any:
            return v2.CreateOrder(order_id=old.order_id, customer_name=old.customer.upper())

        async def create_order(self, cmd: Any, ctx: cbus.AsyncContext) -> None:
            seen.append(f"{type(cmd).__qualname__} {cmd.customer_name} {cmd.channel}")

        async def note(self, cmd: Any, ctx: cbus.AsyncContext) -> None:
            seen.append(f"{type(cmd).__qualname__} {cmd.text} {cmd.tag}")

    sent = [
        v1.send_place_order(conn, order_id=uuid.uuid4(), customer="jane").command_id,
        v1.send_note(conn, text="hi").command_id,
    ]
    conn.commit()
    drain(dsn, [New()])
    assert sorted(seen) == ["CreateOrder JANE web", "Note hi none"]
    assert [_record(conn, c).status for c in sent] == ["COMPLETED", "COMPLETED"]


def test_stats_count_the_commands_waiting_for_a_newer_worker(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    import json

    from .test_cli import cbus_cli

    _send_v1(conn, v1, 2)  # runs on v1: no wait
    sent = _send_v2(conn, v2, 2)  # 2 CreateOrder (unknown to v1), 2 Note v2, 2 Ship
    drain(dsn, [v1_handlers(v1, Calls())])

    def waiting() -> tuple[int, dict[str, Any], list[str]]:
        counted = conn.execute(
            "SELECT count(*) FROM cbus.command WHERE domain = 'evo' AND status = 'PENDING'"
            " AND last_error_code = 'WAITING_FOR_NEWER_WORKER'"
        ).fetchone()
        conn.commit()
        assert counted is not None
        as_json = cbus_cli(dsn, "stats", "--json", "--domain", "evo")
        assert as_json.exit_code == 0, as_json.output
        [found] = json.loads(as_json.stdout)
        table = cbus_cli(dsn, "stats", "--domain", "evo")
        assert table.exit_code == 0, table.output
        header, row = table.stdout.splitlines()
        return counted[0], found, dict(zip(header.split(), row.split(), strict=True))

    counted, found, cells = waiting()
    assert counted == found["waiting_for_newer"] == len(sent) == 6
    assert found["delayed"] == 6 and found["completed_1h"] == 4
    assert cells["WAITING_NEWER"] == "6"
    for command_id in sent:
        record = _record(conn, command_id)
        assert record.status == "PENDING"
        assert (record.last_error_message or "").startswith("Waiting for a newer worker: ")

    conn.execute(f"UPDATE pgmq.q_{QUEUE} SET vt = now()")
    conn.commit()
    drain(dsn, [v2_handlers(v2, Calls())])
    counted, found, cells = waiting()
    assert counted == found["waiting_for_newer"] == 0 and cells["WAITING_NEWER"] == "0"
    assert found["completed_1h"] == 10


def test_an_alias_kind_resolves_wherever_a_kind_is_looked_up(
    dsn: str, conn: psycopg.Connection[Any], v1: ModuleType, v2: ModuleType
) -> None:
    """A message sent with the old kind (`evo.PlaceOrder`) is the renamed command everywhere."""
    from cbus.registry import spec_for_kind

    create_order = v2.DOMAIN.by_kind()["evo.CreateOrder"]
    assert spec_for_kind("evo.PlaceOrder") is create_order
    assert v2.DOMAIN.by_kind()["evo.PlaceOrder"] is create_order
    cbus.install_domain(conn, v2.DOMAIN)  # what a v2 deploy records for tools
    conn.commit()
    recorded = conn.execute(
        "SELECT kind, version FROM cbus.command_type WHERE domain = 'evo' ORDER BY kind, version"
    ).fetchall()
    assert {("evo.PlaceOrder", 1), ("evo.PlaceOrder", 2), ("evo.CreateOrder", 1)} <= set(recorded)

    ran = v1.send_place_order(conn, order_id=uuid.uuid4(), customer="Ann").command_id
    stuck = v1.send_place_order(conn, order_id=uuid.uuid4(), customer="Bob").command_id
    conn.commit()
    calls = Calls()

    class Picky(type(v2_handlers(v2, calls))):  # type: ignore[misc]
        def upgrade_create_order_v1(self, old: Any) -> Any:
            if old.customer == "Bob":
                raise ValueError("no Bob")
            return super().upgrade_create_order_v1(old)

    drain(dsn, [Picky()])
    assert [(c, cls) for _, c, cls in calls.seen] == [(ran, "CreateOrder")]
    record = _record(conn, ran)
    assert (record.kind, record.status, record.attempts) == ("evo.PlaceOrder", "COMPLETED", 1)
    assert cbus.result_of(record, create_order.result_type) is None

    # The troubleshooting queue: shown, and completed with the renamed command's checks.
    detail = cbus.show_command(conn, "evo", stuck)
    assert (detail.record.kind, detail.record.last_error_code) == (
        "evo.PlaceOrder",
        "UPGRADE_FAILED",
    )
    assert detail.headers["kind"] == "evo.PlaceOrder"
    with pytest.raises(cbus.ValidationError, match=r"`evo\.PlaceOrder` declares no result"):
        cbus.troubleshooting.complete(conn, "evo", stuck, operator="ops", result={"n": 1})
    conn.rollback()
    cbus.troubleshooting.complete(conn, "evo", stuck, operator="ops", result=None)
    conn.commit()
    assert _record(conn, stuck).status == "COMPLETED"
