"""`cbus stats` and `cbus.stats.domain_stats` against a database with every status."""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import psycopg
import pytest
from cbus.stats import domain_stats

from .mixed import QUEUE, populate
from .test_cli import cbus_cli


def from_database(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """testbus's numbers counted straight from the tables, one plain query each."""

    def one(query: str) -> Any:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]

    q = f"pgmq.q_{QUEUE}"
    ended = "SELECT count(*) FROM cbus.command WHERE domain = 'testbus' AND status = '{}'"
    return {
        "depth": one(f"SELECT count(*) FROM {q}"),
        "due": one(f"SELECT count(*) FROM {q} WHERE vt <= now()"),
        "troubleshooting": one(
            "SELECT count(*) FROM cbus.command WHERE domain = 'testbus'"
            " AND status = 'IN_TROUBLESHOOTING_QUEUE'"
        ),
        "completed_1h": one(
            ended.format("COMPLETED") + " AND finished_at > now() - interval '1 hour'"
        ),
        "failed_1h": one(ended.format("FAILED") + " AND finished_at > now() - interval '1 hour'"),
    }


def test_stats_json_matches_the_database(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    m = populate(dsn, conn, testbus)
    result = cbus_cli(dsn, "stats", "--json")
    assert result.exit_code == 0, result.output
    by_domain = {d["domain"]: d for d in json.loads(result.stdout)}
    with psycopg.connect(dsn, autocommit=True) as ac:
        queues = ac.execute(
            "SELECT queue_name FROM pgmq.meta WHERE queue_name LIKE '%commands'"
        ).fetchall()
    assert sorted(by_domain) == sorted(q[0].removesuffix("__commands") for q in queues)
    got = by_domain["testbus"]
    counted = from_database(conn)
    assert {k: got[k] for k in counted} == counted
    assert got["due"] == len(m.due) == 2
    assert got["in_flight"] == len(m.in_flight) == 1
    assert got["delayed"] == len(m.delayed) + len(m.backing_off) == 2
    assert got["depth"] == got["due"] + got["delayed"] + got["in_flight"] == 5
    assert got["troubleshooting"] == len(m.tsq_rejected) + len(m.tsq_broken) == 4
    assert got["completed_1m"] == got["completed_1h"] == len(m.completed) == 3
    assert got["failed_1m"] == got["failed_1h"] == len(m.failed) == 2
    assert got["oldest_due_age"] > 0
    idle: dict[str, Any] = {k: 0 for k in got if k not in ("domain", "schedules")}
    assert by_domain["orders"] == {"domain": "orders", **idle, "schedules": []}
    only = cbus_cli(dsn, "stats", "--json", "--domain", "testbus")
    assert [d["domain"] for d in json.loads(only.stdout)] == ["testbus"]


def test_stats_table_and_unknown_domain(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    populate(dsn, conn, testbus)
    result = cbus_cli(dsn, "stats", "--domain", "testbus")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:5] == ["DOMAIN", "DEPTH", "DUE", "DELAYED", "IN_FLIGHT"]
    cells = row.split()
    assert cells[:5] == ["testbus", "5", "2", "2", "1"]
    assert cells[6:] == ["4", "3", "2", "3", "2", "0", "0"]  # WAITING_NEWER, KEY_WAITING last
    assert cbus_cli(dsn, "stats", "--domain", "nowhere").stdout == "No domain `nowhere`\n"
    bad = cbus_cli(dsn, "stats", "--domain", "Bad-Name")
    assert bad.exit_code == 2
    assert "Invalid queue name" in bad.output
    assert "Traceback" not in bad.output


def test_stats_watch_refreshes_in_place_until_interrupted(dsn: str) -> None:
    """A real process on a terminal: each refresh redraws the table, SIGINT ends it with 0."""
    import os
    import pty
    import signal
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbus.cli", "stats", "--dsn", dsn, "--watch", "0.2"],
        stdout=follower,
    )
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 30
    while out.count(b"DOMAIN") < 3 and time.monotonic() < deadline:
        out += os.read(leader, 65536)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    os.close(leader)
    assert out.count(b"DOMAIN") >= 3
    # Every table is drawn over the last one: cursor home and clear screen first.
    assert out.count(b"\x1b[H\x1b[2J") >= out.count(b"DOMAIN") >= 3
    assert b"Traceback" not in out


def test_domain_stats_of_one_domain(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as ac:
        found = domain_stats(ac, "testbus")
        assert [d.domain for d in found] == ["testbus"]
        assert found[0].depth == 0
        with pytest.raises(ValueError, match="Invalid queue name"):
            domain_stats(ac, "x;drop")
