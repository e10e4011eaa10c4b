"""The senders' type hints admit the targets of contract section 12 and reject others.

mypy --strict checks a small user module: every accepted target passes, and each
wrong one is an error on its own line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
ROOT = Path(__file__).resolve().parents[2]

USER_CODE = """
import uuid
from typing import Any

import cbus
import psycopg
import sqlalchemy
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, scoped_session

from shop import orders


def accepted(
    conn: psycopg.Connection[Any],
    pool: ConnectionPool[Any],
    session: Session,
    scoped: scoped_session[Session],
    sa_conn: sqlalchemy.Connection,
) -> None:
    orders.send_cancel_order(conn, order_id=uuid.uuid4())
    orders.send_cancel_order(pool, order_id=uuid.uuid4())
    orders.send_cancel_order(session, order_id=uuid.uuid4())
    orders.send_cancel_order(scoped, order_id=uuid.uuid4())
    orders.send_cancel_order(sa_conn, order_id=uuid.uuid4())
    orders.wait_cancel_order(conn, uuid.uuid4())
    orders.wait_cancel_order(pool, uuid.uuid4())
    orders.wait_cancel_order(session, uuid.uuid4())
    orders.wait_cancel_order(scoped, uuid.uuid4())
    orders.wait_cancel_order(sa_conn, uuid.uuid4())
    cbus.get_command(conn, "orders", uuid.uuid4())
    cbus.get_command(pool, "orders", uuid.uuid4())
    cbus.get_command(session, "orders", uuid.uuid4())
    cbus.get_command(sa_conn, "orders", uuid.uuid4())


async def accepted_async(
    aconn: psycopg.AsyncConnection[Any],
    apool: AsyncConnectionPool[Any],
    asession: AsyncSession,
    asa_conn: AsyncConnection,
) -> None:
    await orders.send_cancel_order_async(aconn, order_id=uuid.uuid4())
    await orders.send_cancel_order_async(apool, order_id=uuid.uuid4())
    await orders.send_cancel_order_async(asession, order_id=uuid.uuid4())
    await orders.send_cancel_order_async(asa_conn, order_id=uuid.uuid4())
    await orders.wait_cancel_order_async(aconn, uuid.uuid4())
    await orders.wait_cancel_order_async(apool, uuid.uuid4())
    await orders.wait_cancel_order_async(asession, uuid.uuid4())
    await orders.wait_cancel_order_async(asa_conn, uuid.uuid4())
    await cbus.get_command_async(asession, "orders", uuid.uuid4())
    await cbus.get_command_async(apool, "orders", uuid.uuid4())


def refused(
    cur: psycopg.Cursor[Any], engine: sqlalchemy.Engine, asession: AsyncSession
) -> None:
    orders.send_cancel_order("postgresql://", order_id=uuid.uuid4())  # refused
    orders.send_cancel_order(None, order_id=uuid.uuid4())  # refused
    orders.send_cancel_order(cur, order_id=uuid.uuid4())  # refused
    orders.send_cancel_order(engine, order_id=uuid.uuid4())  # refused
    orders.send_cancel_order(asession, order_id=uuid.uuid4())  # refused
    cbus.get_command(engine, "orders", uuid.uuid4())  # refused
"""


def test_mypy_accepts_the_documented_targets_and_rejects_others(tmp_path: Path) -> None:
    source = tmp_path / "user_code.py"
    source.write_text(USER_CODE.lstrip("\\n"))
    env = {
        **os.environ,
        "MYPYPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "generated")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(source),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    lines = sorted({int(m.group(1)) for e in errors if (m := re.search(r":(\d+): error:", e))})
    refused = [
        number
        for number, line in enumerate(source.read_text().splitlines(), 1)
        if line.endswith("# refused")
    ]
    assert len(refused) == 6
    assert lines == refused, proc.stdout
    assert all("incompatible type" in e for e in errors), proc.stdout
