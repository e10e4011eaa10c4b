"""A worker and a server that does not answer: at start, and while it runs."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest

from .helpers import running, wait_for
from .tcp_proxy import Proxy


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _echo(testbus: ModuleType) -> Any:
    class Echo(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text="")

    return Echo()


def test_a_worker_refuses_to_start_when_the_server_does_not_answer(
    dsn: str, testbus: ModuleType, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waits a little (a restart), says so once, then gives up with what to check."""
    import cbus._outage

    monkeypatch.setattr(cbus._outage, "START_WAIT", 1.5)  # 10 s by default
    port = _closed_port()
    nowhere = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)
    worker = cbus.Worker(nowhere, [_echo(testbus)])
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            raised.append(exc)

    with caplog.at_level("DEBUG", logger="cbus"):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(15)
        worker.stop()  # a worker that waits for the server instead stops here
        thread.join(15)
    [error] = raised
    assert isinstance(error, cbus.InstallError), error
    assert str(error) == (
        f"Cannot connect to PostgreSQL at 127.0.0.1:{port}: Connection refused. Check that "
        "the server is running and accepts connections there, and the host and port of "
        "the DSN (or PGHOST/PGPORT)"
    )
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "PostgreSQL" in r.getMessage()]
    assert said == [
        (
            "WARNING",
            f"no PostgreSQL at 127.0.0.1:{port} (Connection refused): trying again for 1.5 s "
            "before giving up",
        )
    ]


def test_a_worker_that_starts_while_the_server_restarts_waits_for_it(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    proxy = Proxy(dsn).start()
    proxy.stop()
    testbus.send_echo(conn, n=1)
    conn.commit()
    worker = cbus.Worker(proxy.dsn, [_echo(testbus)], poll_interval=0.05)
    threading.Timer(1.0, proxy.start).start()
    try:
        worker.run(until_idle=True)
    finally:
        proxy.stop()
    assert worker.completed == 1


@pytest.mark.parametrize("halves", ["sync", "sync and async"])
def test_a_server_lost_while_running_is_logged_once_and_so_is_its_return(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    caplog: pytest.LogCaptureFixture,
    halves: str,
) -> None:
    """Both halves of a worker that runs sync and async handlers see the outage too."""
    handlers = [_echo(testbus)]
    if halves == "sync and async":
        chaos = sys.modules[testbus.__name__.rpartition(".")[0] + ".chaos"]
        handlers.append(chaos.ChaosAsyncHandlers())
    proxy = Proxy(dsn).start()
    try:
        with (
            caplog.at_level("INFO", logger="cbus.worker"),
            running(proxy.dsn, handlers, concurrency=4) as worker,
        ):
            testbus.send_echo(conn, n=1)
            conn.commit()
            wait_for(lambda: worker.completed == 1)
            proxy.stop()
            time.sleep(6)  # consumers retry every 5 s at most, the heartbeat faster
            proxy.start()
            testbus.send_echo(conn, n=2)
            conn.commit()
            wait_for(lambda: worker.completed == 2, timeout=15)
    finally:
        proxy.stop()
    said = [
        (r.levelname, r.action, r.getMessage())  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelno >= logging.INFO
        and getattr(r, "action", "").startswith(("server", "conn", "heart"))
    ]
    where = f"127.0.0.1:{proxy.port}"
    assert [(level, action) for level, action, _ in said] == [
        ("WARNING", "server_lost"),
        ("INFO", "server_back"),
    ], said
    assert said[0][2].startswith(f"lost PostgreSQL at {where} (")
    assert said[0][2].endswith("): reconnecting, every 5 s at most, until it answers")
    assert said[1][2].startswith(f"PostgreSQL at {where} answers again, after ")
