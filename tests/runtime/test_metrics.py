"""`/metrics` and `/healthz` of a running worker, scraped and parsed like Prometheus does."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import cbus.metrics
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import drain, running, statuses, wait_for
from .mixed import handlers
from .tcp_proxy import Proxy

QUEUE = "testbus__commands"


def _scrape(worker: cbus.Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert worker.metrics_address is not None
    with urllib.request.urlopen(worker.metrics_address, timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _health(worker: cbus.Worker) -> int:
    assert worker.metrics_address is not None
    url = worker.metrics_address.replace("/metrics", "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_metrics_count_each_command_once_by_how_it_ended(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    for _ in range(3):
        testbus.send_flaky(conn, succeed_on=1)
    for _ in range(2):
        testbus.send_flaky(conn, succeed_on=2)  # one retry each, then completed
    for _ in range(2):
        testbus.send_reject(conn, mode="declared")  # a business error: FAILED
    testbus.send_reject(conn, mode="permanent")  # troubleshooting queue
    ids = {"command_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}
    # A kind of another domain is set aside at once (one of its own would wait: docs/evolution.md).
    headers = {"kind": "other.Nope", "version": 1, **ids}
    conn.execute(
        "SELECT pgmq.send(%s, '{}'::jsonb, %s::jsonb)", (QUEUE, json.dumps(headers))
    )  # set aside unread: UNKNOWN_KIND
    for _ in range(2):
        testbus.send_echo(conn, n=1, text="ok", delay=3600)
    conn.commit()

    with running(dsn, [handlers(testbus)], metrics_port=0) as worker:
        wait_for(
            lambda: (
                statuses(conn, "testbus")
                == {"COMPLETED": 5, "FAILED": 2, "IN_TROUBLESHOOTING_QUEUE": 2, "PENDING": 2}
            )
        )
        time.sleep(cbus.metrics.QUEUE_CACHE + 0.2)  # past the cache of a scrape at start
        got = _scrape(worker)
        assert _health(worker) == 200

    def commands(kind: str, outcome: str) -> float:
        key = (("domain", "testbus"), ("kind", kind), ("outcome", outcome))
        return got[("cbus_commands_total", key)]

    assert commands("testbus.Flaky", "completed") == 5
    assert commands("testbus.Flaky", "failed") == 0
    assert commands("testbus.Reject", "failed") == 2
    assert commands("testbus.Reject", "in_troubleshooting_queue") == 1
    assert commands("testbus.Echo", "completed") == 0
    retries = (("domain", "testbus"), ("kind", "testbus.Flaky"))
    assert got[("cbus_retries_total", retries)] == 2
    reason = (("domain", "testbus"), ("reason", "UNKNOWN_KIND"))
    assert got[("cbus_set_aside_total", reason)] == 1
    assert got[("cbus_handler_seconds_count", retries)] == 7  # 3 + 2 * 2 invocations
    rejects = (("domain", "testbus"), ("kind", "testbus.Reject"))
    assert got[("cbus_handler_seconds_count", rejects)] == 3
    assert got[("cbus_in_flight_commands", (("domain", "testbus"),))] == 0

    def queue(state: str) -> float:
        return got[("cbus_queue_messages", (("domain", "testbus"), ("state", state)))]

    assert (queue("due"), queue("delayed"), queue("in_flight")) == (0, 2, 0)
    assert got[("cbus_oldest_due_age_seconds", (("domain", "testbus"),))] == 0
    assert got[("cbus_troubleshooting_commands", (("domain", "testbus"),))] == 2
    assert not any("command_id" in dict(labels) for _, labels in got)


def test_healthz_follows_the_server(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cbus.metrics, "HEALTH_EVERY", 0.2)
    testbus.send_echo(conn, n=1, text="ok")
    conn.commit()
    proxy = Proxy(dsn).start()
    try:
        with running(proxy.dsn, [handlers(testbus)], metrics_port=0) as worker:
            wait_for(lambda: worker.completed == 1)  # past its start: it runs
            assert _health(worker) == 200
            proxy.stop()
            wait_for(lambda: _health(worker) == 503, timeout=15)
            proxy.start()
            wait_for(lambda: _health(worker) == 200, timeout=15)
    finally:
        proxy.stop()


def test_start_stop_and_debug_lines(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    from cbus.logs import JsonFormatter

    sent = testbus.send_echo(conn, n=1, text="ok")
    conn.commit()
    with caplog.at_level("DEBUG", logger="cbus.worker"):
        drain(dsn, [handlers(testbus)], concurrency=3, batch_size=7)
    lines = {
        r.action: json.loads(JsonFormatter().format(r))  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "action", None) in ("worker_started", "command_completed", "worker_stopped")
    }
    start = lines["worker_started"]
    assert start["domains"]["testbus"].startswith("testbus.Echo@1,")
    assert (start["concurrency"], start["batch_size"], start["poll_interval"]) == (3, 7, 0.05)
    assert start["metrics"] is None
    assert lines["command_completed"]["command_id"] == str(sent.command_id)
    assert (lines["worker_stopped"]["completed"], lines["worker_stopped"]["failed"]) == (1, 0)


def test_cli_a_taken_metrics_port_is_one_line(
    dsn: str, testbus: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_cli import cbus_cli, write_factory

    write_factory(tmp_path, testbus)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = ["worker", "cli_handlers:make", "--until-idle", "--metrics-port", port]
        result = cbus_cli(dsn, *args)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"Error: --metrics-port {port}: [Errno 98] Address already in use"
