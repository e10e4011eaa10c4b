"""The console served by a real uvicorn on 127.0.0.1, against the test's database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from cbus.console.app import create_app

from tests.runtime.mixed import Mixed, populate

TOKEN = "test-token-" + "x" * 20


@dataclass
class Served:
    url: str
    token: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kw: Any) -> httpx.Client:
        """An HTTP client, closed when the console stops."""
        c = httpx.Client(base_url=self.url, follow_redirects=False, timeout=20, **kw)
        self.clients.append(c)
        return c

    def login(self, operator: str = "alice") -> httpx.Client:
        """A client holding a session cookie, as a browser would after the login form."""
        c = self.client()
        r = c.post(
            "/login",
            data={"token": self.token, "operator": operator},
            headers={"Origin": self.url},
        )
        assert r.status_code == 303, r.text
        return c


def serve(dsn: str, *, read_only: bool = False) -> Iterator[Served]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(dsn, TOKEN, read_only=read_only)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "console did not start"
        time.sleep(0.02)
    served = Served(f"http://127.0.0.1:{port}", TOKEN)
    try:
        yield served
    finally:
        for c in served.clients:
            c.close()
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture
def mixed(dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType) -> Mixed:
    """The test's database with commands in every status."""
    return populate(dsn, conn, testbus)


@pytest.fixture
def console(dsn: str) -> Iterator[Served]:
    yield from serve(dsn)


@pytest.fixture
def console_factory(dsn: str) -> Iterator[Callable[..., Served]]:
    """Start more consoles (read-only, another DSN) for the test's duration."""
    running: list[Iterator[Served]] = []

    def start(dsn: str = dsn, **kw: Any) -> Served:
        gen = serve(dsn, **kw)
        running.append(gen)
        return next(gen)

    yield start
    for gen in running:
        for _ in gen:
            pass
