"""The sender's `priority=`: written into the message headers when given, 0 to 9 only."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest


def _headers(conn: psycopg.Connection[Any], msg_id: int) -> Any:
    row = conn.execute(
        "SELECT headers FROM pgmq.q_testbus__commands WHERE msg_id = %s", (msg_id,)
    ).fetchone()
    assert row is not None
    return row[0]


def test_a_priority_lands_in_the_headers(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    high = testbus.send_echo(conn, n=1, priority=9)
    plain = testbus.send_echo(conn, n=2)
    many = cbus.send_many(conn, [testbus.Echo(n=3), testbus.Echo(n=4)], priority=0)
    conn.commit()
    assert _headers(conn, high.msg_id)["priority"] == 9
    assert "priority" not in _headers(conn, plain.msg_id)
    assert [_headers(conn, s.msg_id)["priority"] for s in many] == [0, 0]


@pytest.mark.parametrize("bad", [10, -1])
def test_a_priority_out_of_range_is_refused(
    conn: psycopg.Connection[Any], testbus: ModuleType, bad: int
) -> None:
    with pytest.raises(
        ValueError, match=rf"^priority must be from 0 to 9 \(higher first\), got {bad}$"
    ):
        testbus.send_echo(conn, n=1, priority=bad)
    with pytest.raises(ValueError, match="priority must be from 0 to 9"):
        cbus.send_many(conn, [testbus.Echo(n=1)], priority=bad)
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM pgmq.q_testbus__commands").fetchone() == (0,)


def test_a_bool_priority_is_refused(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"^priority must be an int from 0 to 9, got bool$"):
        testbus.send_echo(conn, n=1, priority=True)
