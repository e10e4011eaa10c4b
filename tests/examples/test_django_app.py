"""examples/django_app end to end: a POST sends inside transaction.atomic(), a refused
send rolls its row back, a worker handles the command, a GET reads its record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("django")
ROOT = Path(__file__).resolve().parents[2]


def test_django_example_end_to_end(dsn: str, shop_orders: Any) -> None:
    env = {
        **os.environ,
        "CBUS_DSN": dsn,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "generated"), str(ROOT)]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.examples.django_run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["placed"][0] == 202
    assert out["refused"] == 422
    assert out["before"]["command_status"] == "PENDING"
    assert out["before"]["order_status"] == "placed"
    assert out["after"] == {
        "order_status": "accepted",
        "command_status": "COMPLETED",
        "result": {"accepted": True, "eta_days": 1},
    }
    with psycopg.connect(dsn) as conn:
        # The refused POST left neither its row nor a command.
        assert conn.execute("SELECT count(*) FROM django_orders").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM cbus.command").fetchone() == (1,)
