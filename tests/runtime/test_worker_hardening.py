"""Issue 11: nothing a handler raises, no failing domain and no signal can stop a worker."""

from __future__ import annotations

import logging
import uuid
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest

from .helpers import drain, statuses


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def _rejecting(testbus: ModuleType) -> Any:
    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            if cmd.mode == "selfref":
                details: dict[str, Any] = {}
                details["me"] = details
                raise cbus.BusinessError("REJECTED", "refers to itself", details)
            if cmd.mode == "deep":
                raise cbus.BusinessError("REJECTED", "deep", _deep(5000))
            if cmd.mode == "badstr":
                raise _BadStr()
            raise ValueError("plain failure")

    return Handlers()


def test_whatever_a_handler_raises_is_a_recorded_failure(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = {mode: testbus.send_reject(conn, mode=mode) for mode in ("selfref", "deep", "badstr")}
    echoes = [testbus.send_echo(conn, n=i) for i in range(3)]
    conn.commit()
    drain(dsn, [_rejecting(testbus)], concurrency=1)
    records = {m: cbus.get_command(conn, "testbus", s.command_id) for m, s in sent.items()}
    assert {m: r.status for m, r in records.items() if r is not None} == {
        "selfref": "FAILED",
        "deep": "FAILED",
        "badstr": "IN_TROUBLESHOOTING_QUEUE",
    }
    assert records["badstr"] is not None and records["badstr"].attempts == 2
    assert "str() failed" in (records["badstr"].last_error_message or "")
    row = conn.execute(
        "SELECT last_error_details FROM cbus.command WHERE command_id = %s",
        (sent["deep"].command_id,),
    ).fetchone()
    assert row is not None and isinstance(row[0], str) and row[0].startswith("[[")
    assert statuses(conn, "testbus").get("COMPLETED") == len(echoes)


def test_a_retried_exception_logs_its_traceback_once(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = testbus.send_reject(conn, mode="plain")  # max_attempts 2
    conn.commit()
    with caplog.at_level(logging.INFO, logger="cbus.worker"):
        drain(dsn, [_rejecting(testbus)], concurrency=1)
    mine = [r for r in caplog.records if getattr(r, "command_id", None) == str(sent.command_id)]
    assert [r.attempt for r in mine] == [1, 2]  # type: ignore[attr-defined]
    assert [r.exc_info is not None for r in mine] == [False, True]
    assert "ValueError: plain failure" in mine[0].getMessage()
    assert uuid.UUID(mine[1].command_id) == sent.command_id  # type: ignore[attr-defined]
