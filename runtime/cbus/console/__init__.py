"""`cbus console`: the operator console, a Starlette app served by uvicorn.

Installed by the `console` extra (`pip install "cbus[console]"`). `serve` runs it;
`cbus.console.app.create_app` gives the ASGI app (tests, or another ASGI server).
"""

from __future__ import annotations

import secrets
import socket
import sys

__all__ = ["new_token", "serve"]

LOOPBACK = ["127.0.0.1", "::1", "[::1]", "localhost"]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def serve(
    dsn: str,
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8089,
    read_only: bool = False,
    sock: socket.socket | None = None,
) -> None:
    """Serve the console until SIGINT or SIGTERM (uvicorn's own signal handling)."""
    import uvicorn

    from .app import create_app as make

    # On a loopback address, only loopback names: no DNS-rebound site gets an answer.
    hosts = LOOPBACK if host in LOOPBACK else None
    app = make(dsn, token, read_only=read_only, allowed_hosts=hosts)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, server_header=False
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    sys.stdout.flush()
