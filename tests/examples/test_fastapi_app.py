"""examples/fastapi_app end to end: POST sends in the session's transaction, a worker
handles it, GET reads the command's record; a POST that fails sends nothing."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ..runtime.helpers import running

pytest.importorskip("fastapi")
sa = pytest.importorskip("sqlalchemy")


def sa_url(dsn: str) -> str:
    info = conninfo_to_dict(dsn)
    url = sa.URL.create(
        "postgresql+psycopg",
        username=info.get("user"),
        password=info.get("password"),
        host=info.get("host"),
        port=int(info["port"]) if info.get("port") else None,
        database=info.get("dbname"),
    )
    return str(url.render_as_string(hide_password=False))


@contextmanager
def serving(app: Any) -> Iterator[httpx.Client]:
    """The app on uvicorn in a thread, on a free port: real HTTP, as a client sees it."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


def test_post_sends_the_worker_handles_get_reads(dsn: str, shop_orders: Any) -> None:
    from examples.fastapi_app import handlers
    from examples.fastapi_app.app import create_app

    body = {"customer_id": "c-1", "sku": "sku-1", "qty": 2, "amount": "9.50"}
    with serving(create_app(sa_url(dsn))) as client:
        placed = client.post("/orders", json=body)
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]
        before = client.get(f"/orders/{order_id}/command").json()
        assert before["command_status"] == "PENDING"
        assert before["order_status"] == "placed"

        # A request the sender refuses leaves no row and no command.
        bad = client.post("/orders", json={**body, "currency": "euro"})
        assert bad.status_code == 422, bad.text

        with running(dsn, handlers.make()):
            waited = client.post("/orders", json={**body, "wait": True})
            assert waited.status_code == 202, waited.text
            assert waited.json()["accepted"] is True
        after = client.get(f"/orders/{order_id}/command").json()
        assert after["command_status"] == "COMPLETED"
        assert after["order_status"] == "accepted"
        assert after["result"] == {"accepted": True, "eta_days": 2}
        assert client.get(f"/orders/{uuid.uuid4()}/command").status_code == 404
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM app_orders").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM cbus.command").fetchone() == (2,)
