"""Messages any PGMQ producer can send (issue 11): each is set aside, none stops a worker.

Every hostile message goes in with raw `pgmq.send`, as any producer could send it.
"""

from __future__ import annotations

import random
import string
import threading
import uuid
from types import ModuleType
from typing import Any

import cbus
import msgspec
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from .helpers import drain, queue_depth, running, wait_for
from .test_worker import QUEUE, _headers, make_handlers

DEEP = 1000


def _long_kind() -> str:
    """A kind of 3,000 characters that PostgreSQL cannot compress under a btree's limit."""
    return "testbus." + "".join(random.choices(string.ascii_letters + string.digits, k=2992))


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _poison_id(msg_id: int) -> uuid.UUID:
    return uuid.uuid5(uuid.UUID("5f0c1b1e-6c62-4f75-8a8e-2f3d4c5b6a70"), f"testbus:{msg_id}")


def _send(conn: psycopg.Connection[Any], message: str, headers: str) -> int:
    row = conn.execute(
        "SELECT pgmq.send('testbus__commands', %s::jsonb, %s::jsonb)", (message, headers)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _reason(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> tuple[str, str, str]:
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None
    return record.status, record.last_error_code or "", record.last_error_message or ""


def _result(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> Any:
    row = conn.execute(
        "SELECT result FROM cbus.command WHERE domain = 'testbus' AND command_id = %s",
        (command_id,),
    ).fetchone()
    assert row is not None
    return row[0]


def _one_hostile(conn: psycopg.Connection[Any], case: str) -> tuple[uuid.UUID, str, str]:
    """Send one hostile message; returns its log row's command_id, its code and reason."""
    headers, command_id = _headers()
    body = '{"n": 1}'
    if case == "deep headers":  # 1. nesting ~1,000 deep
        headers = headers[:-1] + ', "x": ' + _deep(DEEP) + "}"
        code, why = "BAD_HEADERS", f"nested {DEEP + 1} levels deep"
    elif case == "deep body":
        body = '{"n": 1, "text": "x", "extra": ' + _deep(DEEP) + "}"
        code, why = "UNDECODABLE", f"nested {DEEP + 1} levels deep"
    elif case == "long kind":  # 2. a kind of 3,000 characters
        headers, command_id = _headers(kind=_long_kind())
        code, why = "BAD_HEADERS", "a kind of 3000 characters, more than the 200"
    elif case == "large headers":
        headers, command_id = _headers(padding="p" * 5000)
        code, why = "BAD_HEADERS", "bytes, more than the 4096 accepted"
    else:  # 5. integers beyond int64
        digits = {"10**29": 30, "10**400": 401}[case]
        body = '{"n": 1' + "0" * (digits - 1) + "}"
        code, why = "UNDECODABLE", f"an integer of {digits} digits is outside int64"
    _send(conn, body, headers)
    return command_id, code, why


CASES = ["deep headers", "deep body", "long kind", "large headers", "10**29", "10**400"]


def _hostile(conn: psycopg.Connection[Any]) -> dict[uuid.UUID, tuple[str, str]]:
    """One message of each hostile shape: the troubleshooting entries expected."""
    expected = {}
    for case in CASES:
        command_id, code, why = _one_hostile(conn, case)
        expected[command_id] = (code, why)
    return expected


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_message_is_set_aside_with_its_reason(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, case: str
) -> None:
    command_id, code, why = _one_hostile(conn, case)
    good = [testbus.send_echo(conn, n=i) for i in range(10)]
    conn.commit()

    handlers = make_handlers(testbus)
    drain(dsn, [handlers], concurrency=2)

    assert handlers.calls == {"echo": 10}
    for sent in good:
        assert _reason(conn, sent.command_id)[0] == "COMPLETED"
    status, found_code, message = _reason(conn, command_id)
    assert (status, found_code) == ("IN_TROUBLESHOOTING_QUEUE", code), message
    assert why in message
    assert queue_depth(conn, QUEUE) == 0
    [item] = cbus.list_troubleshooting(conn, domain="testbus").items
    assert item.command_id == command_id and len(item.kind) <= 200
    detail = cbus.show_command(conn, "testbus", command_id)  # an operator can look at it
    assert detail.message is not None


def test_the_troubleshooting_index_takes_a_command_of_any_kind(
    conn: psycopg.Connection[Any],
) -> None:
    """A log row with a 3,000-character kind (however it got there) can still be set aside."""
    command_id, kind = uuid.uuid4(), _long_kind()
    conn.execute(
        "INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,"
        " correlation_id) VALUES ('testbus', %s, %s, 1, 'PENDING', 3, %s)",
        (command_id, kind, command_id),
    )
    conn.execute(
        "UPDATE cbus.command SET status = 'IN_TROUBLESHOOTING_QUEUE' WHERE command_id = %s",
        (command_id,),
    )
    conn.commit()
    [item] = cbus.list_troubleshooting(conn, domain="testbus").items
    assert item.command_id == command_id and item.kind == kind[:200]


def test_a_foreign_message_reusing_a_pending_command_id_does_not_complete_it(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    real = testbus.send_echo(conn, n=1, text="real", delay=1.5)
    [batched] = cbus.send_many(conn, [testbus.Echo(n=2, text="real")], delay=1.5)
    conn.commit()
    foreign: dict[int, uuid.UUID] = {}
    for sent in (real, batched):
        headers = {
            "kind": "testbus.Echo",
            "version": 1,
            "command_id": str(sent.command_id),
            "correlation_id": str(sent.correlation_id),
        }
        msg_id = _send(
            conn, '{"n": 666, "text": "attacker"}', msgspec.json.encode(headers).decode()
        )
        foreign[msg_id] = sent.command_id
    # Another kind under the real command's id, with headers too long besides.
    headers = {
        "kind": _long_kind(),
        "version": 1,
        "command_id": str(real.command_id),
        "correlation_id": str(uuid.uuid4()),
    }
    msg_id = _send(conn, '{"n": 667}', msgspec.json.encode(headers).decode())
    conn.commit()

    handlers = make_handlers(testbus)
    with running(dsn, [handlers], concurrency=2):
        wait_for(lambda: _reason(conn, real.command_id)[0] == "COMPLETED", 20)
        wait_for(lambda: _reason(conn, batched.command_id)[0] == "COMPLETED", 20)

    for sent, n in ((real, 1), (batched, 2)):
        assert _result(conn, sent.command_id) == {"n": n, "text": "real"}
    for foreign_msg_id in foreign:
        status, code, message = _reason(conn, _poison_id(foreign_msg_id))
        assert (status, code) == ("IN_TROUBLESHOOTING_QUEUE", "CONFLICTING_DUPLICATE")
        assert str(foreign[foreign_msg_id]) in message
    status, code, message = _reason(conn, _poison_id(msg_id))
    assert (status, code) == ("IN_TROUBLESHOOTING_QUEUE", "BAD_HEADERS")
    assert handlers.calls == {"echo": 2}


def _worker_role(conn: psycopg.Connection[Any], dsn: str) -> tuple[str, str]:
    role = "cbus_w_" + uuid.uuid4().hex[:8]
    conn.execute(f"CREATE ROLE {role} LOGIN")
    for statement in (
        "GRANT USAGE ON SCHEMA cbus, pgmq TO {r}",
        "GRANT ALL ON ALL TABLES IN SCHEMA cbus, pgmq TO {r}",
        "GRANT ALL ON ALL SEQUENCES IN SCHEMA cbus, pgmq TO {r}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cbus, pgmq TO {r}",
        "REVOKE ALL ON pgmq.q_secret_replies FROM {r}",
    ):
        conn.execute(statement.format(r=role))
    conn.commit()
    return role, make_conninfo(dsn, user=role)


def test_replies_go_only_to_reply_queues_the_worker_may_write(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    conn.execute("SELECT pgmq.create('secret_replies'), pgmq.create('replies')")
    conn.commit()
    role, worker_dsn = _worker_role(conn, dsn)
    try:
        to_commands = []
        for queue in ("testbus__commands", "orders__commands"):
            headers, command_id = _headers(reply_to=queue)
            _send(conn, '{"n": 1}', headers)
            to_commands.append(command_id)
        forbidden = [testbus.send_echo(conn, n=i, reply_to="secret_replies") for i in range(3)]
        fine = [testbus.send_echo(conn, n=i, reply_to="replies") for i in range(3)]
        conn.commit()

        handlers = make_handlers(testbus)
        drain(worker_dsn, [handlers], concurrency=1, batch_size=10)

        assert handlers.calls == {"echo": 8}  # each ran once: no retry, no replay
        ids = [*to_commands, *(s.command_id for s in forbidden), *(s.command_id for s in fine)]
        for command_id in ids:
            record = cbus.get_command(conn, "testbus", command_id)
            assert record is not None and (record.status, record.attempts) == ("COMPLETED", 1)
        reasons = dict(
            conn.execute(
                "SELECT command_id, detail ->> 'reason' FROM cbus.audit"
                " WHERE event = 'reply_undeliverable'"
            ).fetchall()
        )
        for command_id in to_commands:
            assert reasons[command_id] == "a reply queue must not be a command queue (`__commands`)"
        for sent in forbidden:
            assert reasons[sent.command_id] == "the worker may not write to the reply queue"
        assert len(reasons) == 5
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM pgmq.q_replies), (SELECT count(*) FROM"
            " pgmq.q_secret_replies), (SELECT count(*) FROM pgmq.q_testbus__commands)"
        ).fetchone()
        assert counts == (3, 0, 0)
    finally:
        conn.rollback()
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")
        conn.commit()


def test_a_worker_facing_every_hostile_message_completes_the_good_ones_and_keeps_running(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """The issue's acceptance: all of the above at once, within 1,000 good commands."""
    conn.execute("SELECT pgmq.create('replies')")
    good = [testbus.send_echo(conn, n=i, reply_to="replies") for i in range(500)]
    expected = _hostile(conn)
    pending = testbus.send_echo(conn, n=-1, text="real", delay=1.0)
    conn.commit()
    headers = _headers()[0]
    fake = {**msgspec.json.decode(headers), "command_id": str(pending.command_id)}
    foreign = _send(conn, '{"n": 666, "text": "attacker"}', msgspec.json.encode(fake).decode())
    expected[_poison_id(foreign)] = ("CONFLICTING_DUPLICATE", str(pending.command_id))
    headers, command_id = _headers(reply_to="orders__commands")
    _send(conn, '{"n": 1}', headers)
    good += [testbus.send_echo(conn, n=i) for i in range(500, 1000)]
    conn.commit()

    handlers = make_handlers(testbus)
    concurrency = 4
    with running(dsn, [handlers], concurrency=concurrency):
        done = [s.command_id for s in good] + [pending.command_id, command_id]

        def finished() -> bool:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'),"
                " count(*) FILTER (WHERE status = 'IN_TROUBLESHOOTING_QUEUE')"
                " FROM cbus.command WHERE domain = 'testbus'"
            ).fetchone()
            conn.commit()
            return row == (len(done), len(expected))

        wait_for(finished, 60)
        consumers = [t for t in threading.enumerate() if t.name.startswith("cbus-consumer-")]
        assert len(consumers) == concurrency and all(t.is_alive() for t in consumers)

    for command_id_, (code, why) in expected.items():
        status, found_code, message = _reason(conn, command_id_)
        assert (status, found_code) == ("IN_TROUBLESHOOTING_QUEUE", code), message
        assert why in message
    assert _result(conn, pending.command_id) == {"n": -1, "text": "real"}
    assert handlers.calls == {"echo": len(good) + 2}
    row = conn.execute("SELECT count(*) FROM pgmq.q_replies").fetchone()
    assert row == (500,)
    assert queue_depth(conn, "orders__commands") == 0


@pytest.mark.parametrize("raised", [RecursionError("too deep"), MemoryError(), ValueError("odd")])
def test_whatever_the_decoder_raises_is_a_troubleshooting_entry(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    raised: Exception,
) -> None:
    """Not only msgspec's DecodeError: the consumer never sees the decoder's exception."""
    from cbus import codec

    decode = codec.decode

    def failing(data: bytes | str, type_: Any) -> Any:
        if b'"poison"' in (data if isinstance(data, bytes) else data.encode()):
            raise raised
        return decode(data, type_)

    monkeypatch.setattr(codec, "decode", failing)
    headers, command_id = _headers()
    _send(conn, '{"n": 1, "text": "poison"}', headers)
    good = [testbus.send_echo(conn, n=i) for i in range(5)]
    conn.commit()

    handlers = make_handlers(testbus)
    drain(dsn, [handlers], concurrency=1)

    assert handlers.calls == {"echo": 5}
    assert all(_reason(conn, s.command_id)[0] == "COMPLETED" for s in good)
    status, code, message = _reason(conn, command_id)
    assert (status, code) == ("IN_TROUBLESHOOTING_QUEUE", "UNDECODABLE")
    assert message == f"Cannot decode `testbus.Echo`: {str(raised) or type(raised).__name__}"
