"""Django's `django.db.connection` as a sender target (contract section 12).

Django's settings are global to a process, so the Django side runs in a process of
its own (tests/runtime/django_target/app.py); this test checks the database and runs
the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest

from .helpers import queue_depth
from .test_send_targets import handled

pytest.importorskip("django")
ROOT = Path(__file__).resolve().parents[2]


def run_app(dsn: str, testbus: ModuleType, *args: str) -> Any:
    generated = Path(testbus.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(generated), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.runtime.django_target.app", dsn, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_django_connection_joins_atomic_and_autocommits_outside(
    dsn: str, testbus: ModuleType
) -> None:
    sent = run_app(dsn, testbus, "send")
    # Inside atomic() nothing was visible to another connection before it committed.
    assert sent["seen_before_commit"] == [0]
    # Outside atomic() the send committed at once, as Django's autocommit does.
    assert sent["seen_at_once"] is True
    with psycopg.connect(dsn) as conn:
        assert cbus.get_command(conn, "testbus", sent["rolled_back"]) is None
        assert cbus.get_command(conn, "testbus", sent["in_savepoint"]) is None
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        assert queue_depth(conn, "testbus__commands") == 3
    assert handled(dsn, testbus) == [2, 3, 5]
    # Waiting works from Django's connection too, in atomic() or not.
    assert run_app(dsn, testbus, "wait", sent["in_atomic"]) == {"result": [2, 2]}
